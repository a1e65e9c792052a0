"""A live conversation for tests: a tiny model, a session, and a virtual room.

The room is the speaker and the microphone on one clock, in real time; the test plays
the user, reacting to what the assistant does (waiting until it speaks, then talking
over it), as a person would. Session time equals room time: both start at the room's
first block. The tiny Qwen2.5-Omni is loaded from `model_dir` unless a loaded `backend`
of another family is given.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import soundfile

from app.flow.events import EventKind, SessionEvent
from app.flow.player import Player
from app.flow.resample import StreamResampler
from app.flow.session import Session, SessionConfig
from app.flow.virtual_room import VirtualRoom
from app.model.contract import Backend, ModelSource, Persona, Quant, Voice
from app.model.qwen_omni.backend import QwenOmniBackend

ROOM_RATE = 48000


class LiveConversation:
    def __init__(
        self,
        model_dir: Path | None,
        record_dir: Path,
        *,
        config: SessionConfig | None = None,
        echo_gain: float = 0.0,
        impulse_response: np.ndarray | None = None,
        backend: Backend | None = None,
        persona: Persona | None = None,
    ) -> None:
        if backend is None:
            assert model_dir is not None
            backend = QwenOmniBackend(unit_ms=1000)
            backend.load(ModelSource(local_dir=model_dir), Quant.BF16, lambda *_: None)
        self.backend = backend
        self.player = Player(ROOM_RATE, resampler_factory=StreamResampler)
        base = config or SessionConfig()
        self.session = Session(
            self.backend,
            self.player,
            persona or Persona("test", "You are a helpful assistant.",
                               voice=Voice(builtin="Chelsie")),
            SessionConfig(**{**base.__dict__, "record_dir": record_dir}),
        )
        self.room = VirtualRoom(
            self.session.timeline,
            self.player.callback,
            np.zeros(0, np.float32),
            rate=ROOM_RATE,
            echo_gain=echo_gain,
            impulse_response=impulse_response,
            until_stopped=True,
            on_event=self.session.on_source_event,
        )
        self.events: list[SessionEvent] = []
        self._changed = threading.Condition()
        self.cleaned: list[tuple[float, np.ndarray, np.ndarray]] = []  # (t, mic, cleaned)
        self.session.cleaned_tap = lambda mic, clean, t: self.cleaned.append(
            (t, mic.copy(), clean.copy())
        )
        self.session.subscribe(self._on_event)
        self.session.attach(self.room)

    def _on_event(self, event: SessionEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def __enter__(self) -> LiveConversation:
        self.session.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.stop()

    # --- the user's side ---------------------------------------------------------------
    def say(self, audio: np.ndarray, rate: int = 16000) -> float:
        """Speak now; returns the session time the speech starts at."""
        return self.room.say(audio, rate)

    def wait_for(self, kind: EventKind, timeout: float, /, after: float = -1.0, **match):
        """The first event of `kind` at session time > `after` whose data has `match`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.kind is kind and event.t > after and all(
                        event.data.get(k) == v for k, v in match.items()
                    ):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(e.kind.value, round(e.t, 2), e.data.get("state")) for e in self.events
                            if e.kind in (EventKind.STATE, EventKind.ERROR)]
                    raise AssertionError(f"no {kind} {match} within {timeout} s; saw {seen}")
                self._changed.wait(remaining)

    def wait_until(self, session_time: float) -> None:
        while self.room.now < session_time:
            time.sleep(0.005)

    def states(self) -> list[tuple[float, str]]:
        return [(e.t, e.data["state"]) for e in self.events if e.kind is EventKind.STATE]

    # --- what came out -----------------------------------------------------------------
    def recording(self) -> tuple[np.ndarray, int]:
        folder = self.session.recorder.folder
        return soundfile.read(folder / "conversation.wav", dtype="float32")


def rms_db(samples: np.ndarray) -> float:
    if len(samples) == 0:
        return -120.0
    return 20 * np.log10(float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) + 1e-9)


def window(audio: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    return audio[max(0, int(start * rate)) : max(0, int(end * rate))]
