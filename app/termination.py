"""SIGTERM ends Duetto the way an ordinary exit does, so nothing written is left half-done.

Python's default for SIGTERM is to die at once: no `finally`, no atexit, and so a
recording whose WAV header was last rewritten up to half a second ago. Raised as
SystemExit in the main thread instead, the process unwinds, and at exit every recording
still open is finalized (app/flow/recording.py). A window that wants a gentler ending
(closing its session first) installs its own handler over this one.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM death


def _exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(TERMINATED_EXIT_CODE)


def exit_on_sigterm() -> bool:
    """Turn SIGTERM into SystemExit; False where signals cannot be set (not the main
    thread, or a platform without SIGTERM delivery)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        signal.signal(signal.SIGTERM, _exit)
    except (ValueError, OSError):
        return False
    return True
