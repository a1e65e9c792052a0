"""A barge-in while the worker is still making an answer the listener has not yet heard
of (its id not read from the inbox) cuts that answer all the same: nothing of it plays
after the flush, and the model is told what was heard of it.

Before, the player already dropped the answer's later chunks (it drops every chunk of a
response it flushed), but the session never counted the answer as interrupted, so the
model was not told: its context kept the whole answer as if the user had heard it.

The listener and worker steps run on one thread, in the order the race takes, so it
happens every time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from app.flow.duplex import Action
from app.flow.player import Player
from app.flow.session import Session, SessionConfig
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


class _CutInBetweenChunks:
    """Answers in two chunks; between them, `between()` runs (the listener's barge-in)."""

    spec = BackendSpec(family="fake", unit_ms=500, audio_in_rate=RATE, audio_out_rate=OUT_RATE,
                       frames_per_unit=1, native_duplex=False)

    def __init__(self) -> None:
        self.between = lambda: None
        self.heard_texts: list[str] = []
        self.interrupts = 0

    def start(self, persona: Persona) -> None:
        pass

    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        tone = 0.3 * np.sin(np.arange(OUT_RATE // 5) / 5.0).astype(np.float32)
        yield Output(speech=SpeechChunk(tone, OUT_RATE, response_id=7, seq=0, text_span="One."))
        self.between()
        yield Output(speech=SpeechChunk(tone, OUT_RATE, response_id=7, seq=1, text_span="Two."))
        yield Output(decision=Decision.END_OF_TURN)

    def interrupt(self) -> None:
        self.interrupts += 1

    def retract(self) -> None:
        pass

    def heard(self, text: str) -> None:
        self.heard_texts.append(text)

    def close(self) -> None:
        pass


def play_a_block(player: Player) -> None:
    now = time.monotonic()
    player.callback(np.zeros((240, 1), np.float32), 240, StreamTime(now, now + 0.005), None)


def test_a_barge_in_before_the_listener_knows_the_answer_still_cuts_it():
    backend = _CutInBetweenChunks()
    player = Player(OUT_RATE)
    session = Session(backend, player, Persona("t", "Be brief."), SessionConfig())
    session.timeline.push_audio(np.zeros(RATE, np.float32), RATE, time.monotonic() - 1.0)
    # The listener has not read the answer's announcement: as far as it knows, nothing
    # is playing when the user cuts in.
    def barge_in_and_play_a_block() -> None:
        session._barge_in(session._now, Action.BARGE_IN)
        play_a_block(player)  # the flush takes effect at the device's next block

    backend.between = barge_in_and_play_a_block
    unit = Unit(0, 0.0, 0.5, RATE, np.zeros(RATE // 2, np.float32))
    session._enqueue(unit, Control(turn_ended=True))
    session._run_unit(session._queue.popleft())

    assert backend.interrupts == 1
    # The first chunk, written before the cut, was flushed; the second was never written.
    play_a_block(player)
    assert player.stats().queued_seconds == 0
    # The model hears what was heard of its answer: nothing reached the speaker.
    assert backend.heard_texts == [""]
