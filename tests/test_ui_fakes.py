"""Stand-ins for the UI tests (no test functions here): a backend that loads instantly or
fails, and a session that records how it was built and emits events on demand.

Import as `import test_ui_fakes as fakes` (pytest puts tests/ on the path).
"""

from __future__ import annotations

import threading
from typing import Any

from app.capture import devices
from app.flow.events import EventHub, EventKind
from app.model.contract import BackendError, BackendSpec, Quant
from app.ui import preflight
from app.ui.controller import ConversationController

SPEC = BackendSpec(family="qwen2.5-omni", unit_ms=1000, audio_in_rate=16000,
                   audio_out_rate=24000, frames_per_unit=1, native_duplex=False,
                   voices=("Chelsie", "Ethan"), vram_gib={Quant.BF16: 1.0})


class FakeBackend:
    def __init__(self) -> None:
        self.spec = SPEC
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeSession:
    def __init__(self, backend: Any, options: Any, preview: Any) -> None:
        self.backend = backend
        self.options = options
        self.preview = preview
        self.events = EventHub()
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.muted: list[bool] = []
        self.force_listens = 0
        self.camera_on = options.camera is not None
        self.camera_calls: list[tuple[bool, str]] = []  # (asked, thread name)
        self.camera_gate = threading.Event()  # cleared: opening the camera hangs
        self.camera_gate.set()
        self.camera_error: Exception | None = None  # set: the camera cannot open

    def subscribe(self, subscriber):
        return self.events.subscribe(subscriber)

    def start(self) -> None:
        self.started.set()
        self.events.emit(EventKind.STATE, 0.0, state="listening", reason="session started")

    def stop(self, reason: str = "stopped") -> None:
        if not self.stopped.is_set():
            self.stopped.set()
            self.events.emit(EventKind.ENDED, 1.0, reason=reason, metrics={})

    def force_listen(self) -> None:
        self.force_listens += 1

    def set_mic_muted(self, muted: bool) -> None:
        self.muted.append(muted)

    def set_camera_enabled(self, enabled: bool) -> bool:
        self.camera_calls.append((enabled, threading.current_thread().name))
        if enabled and not self.camera_on:
            self.camera_gate.wait(10)
            if self.camera_error is not None:
                raise self.camera_error
        self.camera_on = enabled
        return self.camera_on


class Harness:
    """A loader and a session builder that tests steer: fail, block, count."""

    def __init__(self) -> None:
        self.loads = 0
        self.fail_with: Exception | None = None
        self.block = threading.Event()
        self.block.set()  # not blocking unless a test clears it
        self.sessions: list[FakeSession] = []
        self.backends: list[FakeBackend] = []
        self.loading = 0  # loads under way now
        self.most_loading = 0  # the most ever under way at once
        self._count = threading.Lock()
        # The machine the fake runs on: a microphone and a speaker unless a test says not.
        self.audio = devices.AudioDevices(
            (devices.AudioDeviceInfo(0, "Fake mic", 1, 48000.0),),
            (devices.AudioDeviceInfo(1, "Fake speaker", 2, 48000.0),), "")

    def loader(self, options, progress) -> FakeBackend:
        with self._count:
            self.loads += 1
            self.loading += 1
            self.most_loading = max(self.most_loading, self.loading)
        try:
            progress("loading weights", 0.5)
            self.block.wait(10)
            progress("loaded", 1.0)
            if self.fail_with is not None:
                raise self.fail_with
            backend = FakeBackend()
            self.backends.append(backend)
            return backend
        finally:
            with self._count:
                self.loading -= 1

    def build(self, backend, options, *, preview=None) -> FakeSession:
        session = FakeSession(backend, options, preview)
        self.sessions.append(session)
        return session

    def list_audio(self) -> devices.AudioDevices:
        return self.audio

    def prepare(self, options):
        return preflight.prepare(options, list_audio=self.list_audio)

    def controller(self, window_bridge) -> ConversationController:
        return ConversationController(window_bridge, loader=self.loader,
                                      session_builder=self.build, prepare=self.prepare)


def failing(message: str = "the folder has no config.json") -> Exception:
    return BackendError(message, hint="pick a model folder")
