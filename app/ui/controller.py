"""Conversation lifecycle off the main thread: load the model, build and start a session,
stop it, and close everything when the window goes.

Phases: idle → loading → starting → running → stopping → idle. Each slow step runs on
its own worker thread and reports back through signals; the loaded backend is kept
between conversations (loading takes minutes on real weights) and reloaded only when
the model, quantization or device changes.

Cancelling a load: backends offer no cancel, so the progress callback raises at its
next call (a backend calls it between stages: reading weights can go on for a while
after the click) and, whatever happens, the result is discarded; the window is usable at
once. The abandoned load closes what it got and gives the memory back when it stops,
and says so (`load_released`). A new load started meanwhile waits for that first, so two
models never fill the memory at once. `shutdown()` joins every worker (bounded) so no
thread outlives the window.

The camera can be switched on and off while a conversation runs; opening one can take
seconds, so that runs on a worker too, and a camera that cannot open is reported
(`camera_changed`) while the conversation goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.capture.base import CaptureError
from app.flow.conversation import (
    ConversationOptions,
    build_session,
    load_backend,
    release_memory,
)
from app.flow.persona_fit import fit_persona
from app.model.contract import BackendError, BackendSpec
from app.ui import messages, preflight
from app.ui.bridge import SessionBridge

log = logging.getLogger(__name__)

Loader = Callable[[ConversationOptions, Callable[[str, float], None]], Any]
SessionBuilder = Callable[..., Any]
Preparer = Callable[[ConversationOptions], preflight.Prepared]


class LoadCancelled(Exception):
    pass


@dataclass(frozen=True)
class BackendKey:
    """What a loaded backend was loaded from; another key means loading again."""

    family: str
    model: str
    quant: str
    options: str

    @classmethod
    def of(cls, options: ConversationOptions) -> BackendKey:
        return cls(options.family, options.model.describe(), str(options.quant),
                   repr(sorted(options.backend_options.items())))


class ConversationController(QObject):
    phase_changed = Signal(str)
    load_progress = Signal(str, float)
    loaded = Signal(object)  # BackendSpec of the loaded backend
    failed = Signal(object)  # a messages.UserMessage: loading or starting failed; back to idle
    notice = Signal(str)  # something the user should know, not a failure
    advice = Signal(object)  # the same, as a messages.UserMessage
    started = Signal()
    stopped = Signal(str)
    load_released = Signal()  # a cancelled load has stopped and freed its memory
    camera_changed = Signal(bool, str)  # the running camera is on/off; why it failed, or ""
    _worker_phase = Signal(int, str)  # (job, phase) from a worker, applied on the main thread
    _release = Signal(bool)  # a failed or cancelled load's memory, freed on the main thread

    def __init__(
        self,
        bridge: SessionBridge,
        *,
        loader: Loader = load_backend,
        session_builder: SessionBuilder = build_session,
        prepare: Preparer = preflight.prepare,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self._loader = loader
        self._build = session_builder
        self._prepare = prepare
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._phase = "idle"
        self._backend: Any = None
        self._backend_key: BackendKey | None = None
        self._session: Any = None
        self._job = 0  # the current start job; an older one's results are discarded
        self._cancel = threading.Event()
        # The worker loading weights: still running after a cancel until the backend
        # reaches its next progress call; a new load waits for it.
        self._load_thread: threading.Thread | None = None
        self._camera_wanted = False
        # The session a camera worker is switching (it takes later wishes), or None.
        self._camera_job_for: Any = None
        self.bridge.ended.connect(self._on_session_ended)
        self._worker_phase.connect(self._apply_worker_phase)
        self._release.connect(self._release_memory)

    # ------------------------------------------------------------ state
    @property
    def phase(self) -> str:
        return self._phase

    @property
    def backend_spec(self) -> BackendSpec | None:
        backend = self._backend
        return backend.spec if backend is not None else None

    def network_figures(self) -> dict[str, float] | None:
        """A model on a server: what the network adds (RemoteBackend); else None."""
        figures = getattr(self._backend, "network_figures", None)
        return figures() if callable(figures) else None

    def _set_phase(self, phase: str) -> None:
        if phase != self._phase:
            self._phase = phase
            self.phase_changed.emit(phase)

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"duetto-{name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    @property
    def loading_in_background(self) -> bool:
        """A cancelled load has not stopped yet (it still holds what it loaded)."""
        thread = self._load_thread
        return thread is not None and thread.is_alive() and self._phase != "loading"

    # ------------------------------------------------------------ start
    def start(self, options: ConversationOptions) -> None:
        """Load if needed, then build and start a session (all off the main thread)."""
        if self._phase not in ("idle",):
            return
        self._job += 1
        job = self._job
        self._cancel = threading.Event()
        cancel = self._cancel
        key = BackendKey.of(options)
        need_load = self._backend is None or self._backend_key != key
        self._set_phase("loading" if need_load else "starting")
        old = self._backend if need_load else None
        if need_load:
            self._backend, self._backend_key = None, None
        previous = self._load_thread
        thread = self._spawn("start", lambda: self._start_job(
            job, options, key, need_load, old, cancel, previous))
        if need_load:
            self._load_thread = thread

    def cancel_load(self) -> None:
        if self._phase in ("loading", "starting"):
            with self._lock:
                self._cancel.set()
                self._job += 1  # whatever the worker returns now is thrown away
                loaded = self._backend is not None  # kept for the next conversation
            self._set_phase("idle")
            if loaded:
                self.notice.emit("cancelled; the model stays loaded for the next conversation")
            elif self.loading_in_background:
                self.notice.emit("loading cancelled. The model stops loading at its next "
                                 "step and frees its memory then; you can start again now")
            else:
                self.notice.emit("loading cancelled")

    def _start_job(self, job: int, options: ConversationOptions, key: BackendKey,
                   need_load: bool, old: Any, cancel: threading.Event,
                   previous: threading.Thread | None) -> None:
        if previous is not None and previous.is_alive() and need_load:
            # A cancelled load still holds its weights: one model in memory at a time.
            self.load_progress.emit("waiting for the cancelled load to stop", 0.0)
            while previous.is_alive() and not cancel.is_set():
                previous.join(0.1)
            if cancel.is_set():
                return
        kept = self._run_start(job, options, key, need_load, old, cancel)
        # The attempt's exception and frames are gone by now: what a failed or cancelled
        # load loaded is garbage, and the allocator can hand it back. The collection runs
        # on the main thread: a cycle can hold Qt objects, and deleting those from a worker
        # thread crashed the process (a segfault in gc.collect, seen in the test suite).
        if need_load and not kept:
            self._release.emit(cancel.is_set())

    def _release_memory(self, cancelled: bool) -> None:
        release_memory()
        if cancelled:
            self.load_released.emit()

    def _run_start(self, job: int, options: ConversationOptions, key: BackendKey,
                   need_load: bool, old: Any, cancel: threading.Event) -> bool:
        """Load if asked, build and start the session. True if the loaded model is kept."""
        if old is not None:
            _close_quietly(old)
        backend = None
        try:
            # Inputs first: a missing file or microphone is said now, not after a load
            # of 15 s to minutes; the self-check gets stand-ins for missing devices.
            prepared = self._prepare(options)
            options = prepared.options
            for note in prepared.notes:
                self.advice.emit(note)
            if need_load:
                def progress(what: str, fraction: float) -> None:
                    if cancel.is_set():
                        raise LoadCancelled()
                    self.load_progress.emit(what, float(fraction))

                backend = self._loader(options, progress)
                with self._lock:  # a cancel either comes before this or finds it kept
                    if cancel.is_set() or job != self._job:
                        raise LoadCancelled()
                    self._backend, self._backend_key = backend, key
                self.loaded.emit(backend.spec)
                # Which context the memory plan chose for this card, and why.
                if note := getattr(backend, "context_note", ""):
                    self.notice.emit(note)
                self._deliver(job, "starting")
            else:
                backend = self._backend
            persona, note = fit_persona(options.persona, backend.spec)
            if note:
                self.notice.emit(note)
            session = self._build(backend, replace(options, persona=persona),
                                  preview=self.bridge.on_preview)
            if cancel.is_set() or job != self._job:
                raise LoadCancelled()
            self.bridge.attach(session)
            self._session = session
            session.start()
        except LoadCancelled:
            if backend is not None and backend is not self._backend:
                _close_quietly(backend)
            self._detach_failed_session()
            return backend is not None and backend is self._backend
        except Exception as exc:  # any failure: say it, go back to idle, stay usable
            if isinstance(exc, BackendError | CaptureError | preflight.NotReady):
                log.warning("starting the conversation failed: %s", exc)  # worded already
            else:
                log.exception("starting the conversation failed")
            if need_load and backend is not None and backend is not self._backend:
                _close_quietly(backend)
            self._detach_failed_session()
            if job == self._job and not cancel.is_set():
                self._deliver(job, "idle")
                self.failed.emit(exc.message if isinstance(exc, preflight.NotReady)
                                 else messages.start_failed(exc))
            return backend is not None and backend is self._backend
        if job == self._job:
            self._deliver(job, "running")
            self.started.emit()
        else:
            self._stop_session_now("cancelled")
        return True

    def _deliver(self, job: int, phase: str) -> None:
        """A worker's new phase; applied on the main thread, so `phase` is what is shown."""
        self._worker_phase.emit(job, phase)

    def _apply_worker_phase(self, job: int, phase: str) -> None:
        if job == self._job or job < 0:
            self._set_phase(phase)

    def _detach_failed_session(self) -> None:
        session, self._session = self._session, None
        self.bridge.detach()
        if session is not None:
            try:
                session.stop("failed to start")
            except Exception:
                log.exception("stopping a half-started session failed")

    # ------------------------------------------------------------ camera
    def set_camera(self, on: bool) -> None:
        """Switch the running conversation's camera on or off (on a worker: opening a
        camera can take seconds). The outcome comes back as `camera_changed`."""
        session = self._session
        if self._phase != "running" or session is None:
            return
        with self._lock:
            self._camera_wanted = on
            if self._camera_job_for is session:
                return  # the worker under way applies the newest wish when it is done
            self._camera_job_for = session
        self._spawn("camera", lambda: self._camera_job(session))

    @property
    def switching_camera(self) -> bool:
        return self._camera_job_for is not None

    def _camera_job(self, session: Any) -> None:
        """Bring the session's camera to the newest wish; report where it ended up
        (unless the conversation ended meanwhile: the wish is then for the next one)."""
        while True:
            with self._lock:
                wanted = self._camera_wanted
            try:
                on, error = bool(session.set_camera_enabled(wanted)), ""
            except Exception as exc:  # no camera, one in use, a bad file: talk goes on
                log.info("the camera could not be switched on: %s", exc)
                on = False
                error = messages.describe(exc).happened
            with self._lock:
                if self._camera_wanted == wanted or session is not self._session:
                    if self._camera_job_for is session:
                        self._camera_job_for = None
                    break
        if session is self._session:
            self.camera_changed.emit(on, error)

    # ------------------------------------------------------------ stop
    def stop(self) -> None:
        if self._phase in ("loading", "starting"):
            self.cancel_load()
            return
        if self._phase != "running":
            return
        self._set_phase("stopping")
        self._spawn("stop", lambda: self._stop_session_now("stopped by the user"))

    def _stop_session_now(self, reason: str) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.stop(reason)  # emits ENDED through the bridge
            except Exception as exc:
                log.exception("stopping the session failed")
                fault = messages.describe(exc)
                self.failed.emit(messages.UserMessage(
                    messages.ERROR, f"Ending the conversation failed: {fault.happened}",
                    "the window stays usable", fault.to_do))
        self.bridge.detach()
        self._worker_phase.emit(-1, "idle")
        self.stopped.emit(reason)

    def _on_session_ended(self, reason: str, _metrics: dict) -> None:
        """The session ended by itself (an error, a lost device): tidy up off-thread."""
        if self._phase == "running" and self._session is not None:
            self._set_phase("stopping")
            self._spawn("stop", lambda: self._stop_session_now(reason or "ended"))

    # ------------------------------------------------------------ shutdown
    def unload(self) -> None:
        """Forget the loaded model (settings changed); closes it off the main thread."""
        if self._phase != "idle" or self._backend is None:
            return
        backend, self._backend, self._backend_key = self._backend, None, None
        self._spawn("unload", lambda: _close_quietly(backend))

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Stop the session, close the model, join every worker. True if all ended."""
        self._cancel.set()
        self._job += 1
        if self._session is not None:
            self._stop_session_now("window closed")
        self.bridge.detach()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout_s)
        backend, self._backend = self._backend, None
        if backend is not None:
            _close_quietly(backend)
        return not any(t.is_alive() for t in threads)

    def alive_threads(self) -> list[threading.Thread]:
        with self._lock:
            return [t for t in self._threads if t.is_alive()]


def _close_quietly(backend: Any) -> None:
    try:
        backend.close()
    except Exception:
        log.exception("closing the backend failed")
