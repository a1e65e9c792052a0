"""Conversations still running when the interpreter exits are ended first.

A process can exit with a conversation running: SIGTERM raised as SystemExit
(app/termination.py), an error that ends the main thread, a program that forgets to
stop its session. Python then runs its atexit handlers while the session's daemon
threads still run: livekit disposes its native library in its own handler, and the
listener's next call into the echo canceller fails (an AssertionError traceback, and
at times a C++ terminate that aborts the process); the event log never gets its
"ended" line. Each running session is tracked here, and one handler stops them all
before the native libraries go. It is registered again whenever a session starts, so
it stays the last registered and runs first (atexit runs last in, first out; livekit's
handler is registered when the first echo canceller is made, before that).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class _Stoppable(Protocol):
    def stop(self, reason: str = ...) -> None: ...


_lock = threading.Lock()
_running: weakref.WeakSet[_Stoppable] = weakref.WeakSet()
EXIT_REASON = "the app is exiting"


def track(session: _Stoppable) -> None:
    """`session` has started: end it at exit unless it ends before."""
    with _lock:
        _running.add(session)
        atexit.unregister(stop_all)
        atexit.register(stop_all)


def untrack(session: _Stoppable) -> None:
    with _lock:
        _running.discard(session)


def stop_all() -> None:
    """End every session still running (at exit; safe to call at any time)."""
    with _lock:
        sessions = list(_running)
    for session in sessions:
        try:
            session.stop(EXIT_REASON)
        except Exception:  # at exit: keep going, the others must end too
            log.exception("ending a conversation at exit failed")
