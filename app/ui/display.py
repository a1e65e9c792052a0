"""Is there a screen for the window? Asked before Qt starts: without one, Qt's xcb plugin
aborts the process with a message about a missing xcb-cursor0 library, which sends people
to install a package they already have. No Qt here."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

NO_DISPLAY = ("There is no display to open the window on (DISPLAY is not set): run Duetto "
              "in a desktop session, or without a screen with QT_QPA_PLATFORM=offscreen "
              "or under xvfb-run.")


def display_problem(environ: Mapping[str, str] | None = None,
                    platform: str = sys.platform) -> str | None:
    """One sentence saying what to do when the window cannot be shown, else None.

    Only X11 and Wayland need a display server named in the environment; Windows and macOS
    always have their own, and other Qt platforms (offscreen, vnc, eglfs) need none.
    """
    env = os.environ if environ is None else environ
    if platform in ("win32", "darwin", "cygwin"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").split(":", 1)[0].strip()
    if qpa and qpa not in ("xcb", "wayland", "wayland-egl"):
        return None
    x11, wayland = bool(env.get("DISPLAY")), bool(env.get("WAYLAND_DISPLAY"))
    if qpa == "xcb":
        return None if x11 else NO_DISPLAY
    if qpa.startswith("wayland"):
        return None if wayland else NO_DISPLAY.replace("DISPLAY is not set",
                                                       "WAYLAND_DISPLAY is not set")
    return None if x11 or wayland else NO_DISPLAY
