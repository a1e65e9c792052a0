"""What every capture source shares: its lifecycle and the events it reports.

A source's life, the same for devices and files:

* `start()` opens the device or file. Anything wrong at this point (no such camera,
  no such microphone name, an unreadable file, a sample rate the device refuses)
  raises `CaptureError`, whose message names the device or file. No event is sent
  for a source that never started.
* Once `start()` has returned, the source has sent STARTED, and from then on it never
  raises: it ends with exactly one terminal event, STOPPED (`stop()` was called, or a
  file reached its end) or LOST (the device failed or disappeared; the message says
  what happened in words a user understands). After either, its thread has ended or
  been abandoned (see `stop`) and its device handle is closed.

Events are delivered on a capture thread (never on PortAudio's callback thread): the
callback must be quick and thread-safe. An exception raised by it is logged and
swallowed, so a faulty listener cannot take capture down with it.
"""

from __future__ import annotations

import logging
import threading

from app.capture.sinks import EventCallback, SourceEvent, SourceEventKind

log = logging.getLogger(__name__)


class CaptureError(Exception):
    """A source could not start. The message names the device or file and says why."""


class SourceLifecycle:
    """Sends STARTED once and exactly one terminal event, whatever thread gets there first.

    Faults race with `stop()` (a camera can vanish while the user clicks stop): the lock
    makes sure listeners see one clean ending rather than STOPPED followed by LOST.
    """

    def __init__(self, name: str, on_event: EventCallback | None) -> None:
        self.name = name
        self._on_event = on_event
        self._lock = threading.Lock()
        self._started = False
        self._ended = threading.Event()
        self._end_event: SourceEvent | None = None

    @property
    def running(self) -> bool:
        return self._started and not self._ended.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def end_event(self) -> SourceEvent | None:
        """The terminal event, once the source has ended."""
        return self._end_event

    def wait_ended(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)

    def started(self, message: str = "") -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self._emit(SourceEvent(self.name, SourceEventKind.STARTED, message))

    def finish(self, kind: SourceEventKind, message: str = "") -> bool:
        """Record the end of the source; returns False if it had already ended."""
        if kind is SourceEventKind.STARTED:
            raise ValueError("finish() takes STOPPED or LOST")
        with self._lock:
            if self._ended.is_set():
                return False
            event = SourceEvent(self.name, kind, message)
            self._end_event = event
            self._ended.set()
        self._emit(event)
        return True

    def _emit(self, event: SourceEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # a listener's bug must not stop capture or hide the event
            log.exception("event listener failed on %s", event)


class ThreadedSource:
    """A source whose work runs on one thread it owns, ended through a stop event.

    The device or file is opened, used and closed on that one thread (some camera
    drivers dislike being touched from several), while `start()` waits for the opening
    at most `open_timeout_s`, so a driver that hangs cannot hang the caller.

    Subclasses implement `_open()` (raise CaptureError naming the device; return the
    STARTED message), `_run()` (return when `self._stop` is set or after ending the
    source through `self._life.finish`) and `_close()` (release whatever `_open` got,
    also after a failed or partial `_open`).
    """

    def __init__(
        self,
        name: str,
        on_event: EventCallback | None,
        stop_timeout_s: float = 1.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self._life = SourceLifecycle(name, on_event)
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._go = threading.Event()
        self._open_error: CaptureError | None = None
        self._started_message = ""
        self._thread: threading.Thread | None = None
        self.stop_timeout_s = stop_timeout_s
        self.open_timeout_s = open_timeout_s

    @property
    def name(self) -> str:
        return self._life.name

    @property
    def running(self) -> bool:
        return self._life.running

    @property
    def end_event(self) -> SourceEvent | None:
        """STOPPED or LOST with its message, once the source has ended; else None."""
        return self._life.end_event

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the source has ended (STOPPED or LOST); False on timeout."""
        return self._life.wait_ended(timeout_s)

    def start(self) -> None:
        """Open and start; raises CaptureError (device named) if it cannot."""
        if self._thread is not None:
            raise CaptureError(f"{self.name} was already started; make a new source")
        self._thread = threading.Thread(target=self._thread_main, name=self.name, daemon=True)
        self._thread.start()
        if not self._opened.wait(self.open_timeout_s):
            self._stop.set()
            self._go.set()
            raise CaptureError(f"{self.name} did not open within {self.open_timeout_s:g} s")
        if self._open_error is not None:
            self._join(self.stop_timeout_s)
            raise self._open_error
        self._life.started(self._started_message)
        self._go.set()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop and wait at most `timeout_s` (default `stop_timeout_s`) for the thread.

        Always returns within that bound, even when a driver call never comes back; the
        result says whether the thread ended (False: it was left behind as a daemon
        thread, and closes its device if the call ever returns). Sends STOPPED unless
        the source had already ended. Safe to call more than once, and before start().
        """
        self._stop.set()
        self._go.set()
        ended = self._join(self.stop_timeout_s if timeout_s is None else timeout_s)
        if self._life.running:
            message = "stopped" if ended else "stopped; a device call was stuck and left behind"
            self._life.finish(SourceEventKind.STOPPED, message)
        return ended

    def _join(self, timeout_s: float) -> bool:
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _thread_main(self) -> None:
        try:
            try:
                self._started_message = self._open()
            except CaptureError as exc:
                self._open_error = exc
                return
            except Exception as exc:  # a driver's own exception, reworded with the name
                self._open_error = CaptureError(f"{self.name} could not be opened: {exc}")
                return
            finally:
                self._opened.set()
            self._go.wait()
            if not self._stop.is_set():
                self._run()
        except Exception as exc:  # an unexpected failure ends this source, not the app
            log.exception("%s failed", self.name)
            self._life.finish(SourceEventKind.LOST, f"{self.name} failed: {exc}")
        finally:
            self._stop.set()  # helpers of this source (a watchdog) end with it
            try:
                self._close()
            except Exception:  # closing a vanished device may fail; it is gone anyway
                log.debug("closing %s failed", self.name, exc_info=True)

    def _open(self) -> str:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass
