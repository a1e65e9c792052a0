"""A model that stops in the middle of an answer is explained to the user, and its
return too (stall.py); a user speaking over the answer is no stall."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from app.flow.events import EventKind
from app.flow.player import Player
from app.flow.session import Session, SessionConfig
from app.flow.stall import RESUMED, STALLED, StallWatch
from app.flow.virtual_output import StreamTime
from app.model.contract import (
    BackendSpec,
    Control,
    Decision,
    Output,
    Persona,
    SpeechChunk,
    Unit,
)

RATE = 16000
OUT_RATE = 24000
BLOCK = 240  # 10 ms device blocks


def test_the_watch_speaks_once_per_stall_and_once_when_it_ends():
    watch = StallWatch(after_s=1.0)
    assert watch.update(0.0, due=True, played=True) is None
    assert watch.update(0.5, due=True, played=False) is None
    assert watch.update(1.4, due=True, played=False) is None  # 0.9 s without sound
    assert watch.update(1.6, due=True, played=False) == STALLED
    assert watch.update(3.0, due=True, played=False) is None  # said once
    assert watch.update(3.1, due=True, played=True) == RESUMED
    assert watch.update(9.0, due=False, played=False) is None  # nothing due: no stall
    # A stall that ends with the answer (barge-in, the model gave up) just clears.
    watch.update(10.0, due=True, played=False)
    assert watch.update(11.5, due=True, played=False) == STALLED
    assert watch.update(11.6, due=False, played=False) is None
    assert watch.stalls == 2


def _tone(seconds: float) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(OUT_RATE * seconds)) / 5.0)).astype(np.float32)


class _StallingAnswerer:
    """Answers with half a second of sound, then stops until `go_on` is set."""

    spec = BackendSpec(family="fake", unit_ms=500, audio_in_rate=RATE, audio_out_rate=OUT_RATE,
                       frames_per_unit=1, native_duplex=False)

    def __init__(self) -> None:
        self.go_on = threading.Event()

    def start(self, persona: Persona) -> None:
        pass

    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        if not control.turn_ended:
            return iter([Output(decision=Decision.LISTEN)])
        return self._answer()

    def _answer(self) -> Iterator[Output]:
        yield Output(text="Well,", speech=SpeechChunk(_tone(0.5), OUT_RATE, 1, 0, "Well,"))
        self.go_on.wait(10)  # the model stalls here (a busy GPU)
        yield Output(text=" yes.", speech=SpeechChunk(_tone(0.5), OUT_RATE, 1, 1, " yes."))
        yield Output(decision=Decision.END_OF_TURN)

    def interrupt(self) -> None:
        pass

    def retract(self) -> None:
        pass

    def heard(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _notices(events, what: str) -> list:
    return [e for e in events if e.kind is EventKind.NOTICE and e.data["what"] == what]


def test_a_stalled_answer_is_explained_and_its_return_told():
    backend = _StallingAnswerer()
    player = Player(OUT_RATE)
    session = Session(backend, player, Persona("t", "Be brief."), SessionConfig())
    session.stall.after_s = 0.4
    session.timeline.push_audio(np.zeros(RATE, np.float32), RATE, time.monotonic() - 1.0)
    events: list = []
    session.subscribe(events.append)
    now = session.timeline.session_time(time.monotonic())
    session._now = now
    session._last_offset_t = now - session.config.duplex.end_of_turn_silence
    session._prepare_turn()
    session._end_turn(session._now)  # the user's turn is over: the answer is due
    worker = threading.Thread(target=session._run_unit, args=(session._queue.popleft(),))
    worker.start()

    def listen(seconds: float) -> None:  # the listener's ticks, with the speaker playing
        out = np.zeros((BLOCK, 1), np.float32)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            session._drain_inbox()
            for _ in range(2):
                t = time.monotonic()
                player.callback(out, BLOCK, StreamTime(t, t + 0.005), None)
            session._check_playback()
            time.sleep(0.02)

    try:
        listen(1.5)  # half a second of sound, then a second of nothing
        warned = _notices(events, STALLED)
        assert warned, "the stall was not explained"
        assert warned[0].data["seconds"] == 0.4
        assert not _notices(events, RESUMED)
        backend.go_on.set()
        listen(0.6)
        assert _notices(events, RESUMED), "the model's return was not told"
    finally:
        backend.go_on.set()
        worker.join(5)
    assert len(warned) == 1
