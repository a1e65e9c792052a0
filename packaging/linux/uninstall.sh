#!/usr/bin/env bash
# Removes Duetto: the program, its environment (the libraries the first start built), the
# command, the menu entry and the icon. Your settings, personas, recordings and
# downloaded models stay unless you pass --purge.
set -euo pipefail
prefix="${DUETTO_PREFIX:-$HOME/.local/opt/duetto}"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
if [ -x "$prefix/duetto" ]; then
    "$prefix/duetto" --remove-environment
fi
rm -rf "$prefix"
rm -f "$HOME/.local/bin/duetto" "$data/applications/duetto.desktop" \
      "$data/icons/hicolor/scalable/apps/duetto.svg"
if [ "${1:-}" = "--purge" ]; then
    # The app's own folders (platformdirs on Linux): settings and personas, recordings, models.
    rm -rf "${XDG_CONFIG_HOME:-$HOME/.config}/duetto" "$data/duetto" "${XDG_CACHE_HOME:-$HOME/.cache}/duetto"
    echo "Duetto and all your Duetto data are removed."
else
    echo "Duetto is removed. Your settings, personas, recordings and models are kept (uninstall.sh --purge removes them)."
fi
