"""Loads `sounddevice` on first use and turns a missing PortAudio into a clear message.

`import sounddevice` raises OSError when the PortAudio shared library is absent (on
Linux: Debian's libportaudio2), so importing it at module level would take down
anything that merely imports capture code. Everything that talks to audio devices
goes through `load_sounddevice()`; tests replace it with a fake module.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

_lock = threading.Lock()
_module: ModuleType | None = None


class AudioUnavailable(Exception):
    """sounddevice/PortAudio cannot be used on this machine; the message says why."""


def _install_hint() -> str:
    if sys.platform.startswith("linux"):
        return "install PortAudio: sudo apt-get install libportaudio2 (Debian/Ubuntu)"
    return "reinstall the sounddevice package, which bundles PortAudio on this platform"


def load_sounddevice() -> ModuleType:
    """The sounddevice module, imported once; raises AudioUnavailable if it cannot be."""
    global _module
    with _lock:
        if _module is not None:
            return _module
        try:
            import sounddevice
        except OSError as exc:  # the PortAudio library itself is missing
            message = f"PortAudio is not installed ({exc}); {_install_hint()}"
            raise AudioUnavailable(message) from exc
        except ImportError as exc:
            raise AudioUnavailable(f"the sounddevice package is missing ({exc})") from exc
        _module = sounddevice
        return sounddevice
