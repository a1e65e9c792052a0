#!/usr/bin/env bash
# Installs Duetto for this user (no root): the program into ~/.local/opt/duetto, a
# `duetto` command into ~/.local/bin, a menu entry and its icon. Running a newer
# installer's install.sh replaces the program; the next start updates the environment in
# place and keeps settings, personas, recordings and models.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${DUETTO_PREFIX:-$HOME/.local/opt/duetto}"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
bin="$HOME/.local/bin"

rm -rf "$prefix.new"
mkdir -p "$(dirname "$prefix")" "$bin" "$data/applications" "$data/icons/hicolor/scalable/apps"
cp -a "$here" "$prefix.new"
rm -rf "$prefix"
mv "$prefix.new" "$prefix"
ln -sfn "$prefix/duetto" "$bin/duetto"
cp "$here/share/duetto.svg" "$data/icons/hicolor/scalable/apps/duetto.svg"
sed "s|@LAUNCHER@|$prefix/duetto|g" "$here/share/duetto.desktop" > "$data/applications/duetto.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
echo "Duetto is installed in $prefix; start it from the menu or with: $bin/duetto"
echo "The first start downloads its libraries (about 1 GB, more with CUDA) and says which torch build it picked."
