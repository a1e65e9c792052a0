"""A capture device of a conversation that comes back by itself after it was lost.

A microphone or camera lost mid-conversation (unplugged, a driver reset, taken by
another app) ends with a LOST event (app/capture/base.py). The keeper notices, and
while the conversation runs it tries to open the device again: after a second at
first, then less and less often (every `max_retry_s` at most), so a device that stays
away costs next to nothing. When one opens, the keeper reports "restored" and the
conversation has it back without the user doing anything.

While the device is away a `stand_in` may run in its place. The microphone's is
silence on the same clock (app/capture/silence.py): a session's time is its
microphone's samples, so without it the listener, the end of the answer being spoken
and the recording would all stop until the microphone came back.

A file replayed as a device (`reopen=False`) is not tried again: a file that failed
once fails the same way every time. A device that fails again soon after it came back
keeps the longer wait between tries, so a flapping device does not flood the user.

Switching the device off (the camera button) stops it and any tries; switching it on
opens it at once and raises CaptureError if it cannot (it then stays off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from app.capture.base import CaptureError
from app.capture.sinks import SourceEventKind

log = logging.getLogger(__name__)

RESTORED = "restored"  # the DEVICE event kind of a device that is back


class Source(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout_s: float | None = None) -> bool: ...


Report = Callable[[str, str, str], None]  # (source name, kind, message)


def _lost(source: object) -> bool:
    end = getattr(source, "end_event", None)  # ThreadedSource: set once it has ended
    return end is not None and end.kind is SourceEventKind.LOST


class DeviceKeeper:
    def __init__(
        self,
        name: str,
        factory: Callable[[], Source],
        report: Report,
        *,
        wanted: bool = True,
        reopen: bool = True,
        stand_in: Callable[[], Source] | None = None,
        retry_s: float = 1.0,
        max_retry_s: float = 3.0,
        poll_s: float = 0.2,
        stop_timeout_s: float = 2.0,
        stable_s: float = 10.0,
    ) -> None:
        self.name = name
        self.reopen = reopen
        self._factory = factory
        self._report = report
        self._make_stand_in = stand_in
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.poll_s = poll_s
        self.stop_timeout_s = stop_timeout_s
        self.stable_s = stable_s  # up this long after coming back: the next loss starts afresh
        self._lock = threading.Lock()  # _source, _stand_in, _wanted, _lost_at
        self._opening = threading.Lock()  # one open at a time (the user's or a retry)
        self._source: Source | None = None
        self._stand_in: Source | None = None
        self._wanted = wanted
        self._lost_at: float | None = None  # when it was lost; None while not away
        self._next_try = 0.0
        self._tries = 0
        self._restored_at = -1e9
        self._started = False
        self._ended = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restored = 0  # times it came back

    @property
    def running(self) -> bool:
        with self._lock:
            source = self._source
        return source is not None and not _lost(source)

    @property
    def away(self) -> bool:
        """Lost, and being waited for."""
        with self._lock:
            return self._lost_at is not None

    # ------------------------------------------------------------------ the session's
    def start(self) -> None:
        """The conversation begins: watch, and open the device if wanted (raises
        CaptureError when it cannot open)."""
        self._started = True
        self._watcher = threading.Thread(target=self._watch, name=f"{self.name}-keeper",
                                         daemon=True)
        self._watcher.start()
        if self._wanted:
            self._open()

    def switch(self, on: bool) -> bool:
        """The user's switch. Returns whether the device is wanted and (once the
        conversation runs) open. On: raises CaptureError when it cannot open."""
        with self._lock:
            self._wanted = on
            if not on:
                self._lost_at = None
        if not on:
            self._close_current()
            self._stop_stand_in()
            return False
        if not self._started:
            return True  # opened when the conversation starts
        self._open()
        return self.running

    def stop(self) -> bool:
        """The conversation ends: close everything, stop trying. True if all ended."""
        self._ended.set()
        self._close_current()
        self._stop_stand_in()
        watcher = self._watcher
        if watcher is None or watcher is threading.current_thread():
            return True
        watcher.join(self.stop_timeout_s)
        return not watcher.is_alive()

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        with self._opening:
            if self.running:
                return
            self._stop_stand_in()  # one producer at a time on the timeline
            try:
                source = self._factory()
                source.start()
            except BaseException:
                if self.away and not self._ended.is_set():
                    self._start_stand_in()
                raise
            with self._lock:
                keep = not self._ended.is_set() and self._wanted
                if keep:
                    self._source = source
                    lost_at, self._lost_at = self._lost_at, None
            if not keep:  # the conversation ended, or it was switched off, meanwhile
                source.stop()
                return
        if lost_at is not None:
            self.restored += 1
            self._restored_at = time.monotonic()
            name = str(getattr(source, "name", self.name))
            away = time.monotonic() - lost_at
            self._report(name, RESTORED, f"The {self.name} is back after {away:.0f} s away")

    def _close_current(self) -> None:
        with self._lock:
            source, self._source = self._source, None
        if source is not None:
            try:
                source.stop()
            except Exception:
                log.exception("stopping the %s failed", self.name)

    def _start_stand_in(self) -> None:
        if self._make_stand_in is None:
            return
        with self._lock:
            if self._stand_in is not None:
                return
        try:
            stand_in = self._make_stand_in()
            stand_in.start()
        except Exception:
            log.exception("the %s's stand-in could not start", self.name)
            return
        with self._lock:
            keep = self._stand_in is None and not self._ended.is_set()
            if keep:
                self._stand_in = stand_in
        if not keep:
            stand_in.stop()

    def _stop_stand_in(self) -> None:
        with self._lock:
            stand_in, self._stand_in = self._stand_in, None
        if stand_in is not None:
            stand_in.stop()

    # ------------------------------------------------------------------ watching
    def _watch(self) -> None:
        while not self._ended.wait(self.poll_s):
            try:
                self._check()
            except Exception:  # the watcher must outlive any one failure
                log.exception("watching the %s failed", self.name)

    def _check(self) -> None:
        with self._lock:
            source, wanted, away = self._source, self._wanted, self._lost_at is not None
        if source is not None:
            if not _lost(source):
                return
            with self._lock:
                if self._source is source:
                    self._source = None
                if self._wanted and self.reopen:
                    self._lost_at = time.monotonic()
            source.stop()  # it has ended; this releases what it held
            if time.monotonic() - self._restored_at > self.stable_s:
                self._tries = 0
            self._next_try = time.monotonic() + min(
                self.max_retry_s, self.retry_s * 2 ** self._tries)
            if wanted:
                self._start_stand_in()
            return
        if not (wanted and away) or time.monotonic() < self._next_try:
            return
        try:
            self._open()
        except CaptureError as exc:  # still away: quietly try again later
            log.debug("the %s is not back yet: %s", self.name, exc)
        except Exception:
            log.warning("reopening the %s failed", self.name, exc_info=True)
        self._tries += 1
        wait = min(self.max_retry_s, self.retry_s * 2 ** self._tries)
        self._next_try = time.monotonic() + wait
