"""The answer delay (end of the user's speech → first sound of the answer) is measured on
answers that play, never on one prepared during a pause and retracted; a retracted answer
is neither heard nor, after its retraction, shown.

Found in a self-check: the side panel showed "Answer delay 231 ms", under the 0.6 s
end-of-turn silence, which no real answer can beat. The worker announced a speculative
answer's first speech just before the user went on; the listener retracted the answer,
then read the stale announcement, took the flushed answer's first sample for "heard"
(in the past, since the flush skipped over it) and reported a latency, with a moment in
the SPEAKING state while the user was talking. The steps below are the listener's and
the worker's, in the order that race takes, on one thread so it happens every time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from app.flow.duplex import DuplexState
from app.flow.events import EventKind
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
BLOCK = 240  # 10 ms device blocks


class _Answerer:
    """A turn-based backend whose answer is one short chunk of sound."""

    spec = BackendSpec(family="fake", unit_ms=500, audio_in_rate=RATE, audio_out_rate=OUT_RATE,
                       frames_per_unit=1, native_duplex=False)

    def __init__(self) -> None:
        self.responses = 0
        self.interrupts = 0

    def start(self, persona: Persona) -> None:
        pass

    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        if not control.turn_ended:
            return iter([Output(decision=Decision.LISTEN)])
        self.responses += 1
        tone = 0.3 * np.sin(np.arange(OUT_RATE // 5) / 5.0).astype(np.float32)
        chunk = SpeechChunk(tone, OUT_RATE, response_id=self.responses, seq=0, text_span="Hi.")
        return iter([Output(text="Hi.", speech=chunk), Output(decision=Decision.END_OF_TURN)])

    def interrupt(self) -> None:
        self.interrupts += 1

    def retract(self) -> None:
        pass

    def heard(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Device:
    """The output device, one block at a time, on the monotonic clock."""

    def __init__(self, player: Player) -> None:
        self.player = player

    def play(self, blocks: int = 1) -> None:
        out = np.zeros((BLOCK, 1), np.float32)
        for _ in range(blocks):
            now = time.monotonic()
            self.player.callback(out, BLOCK, StreamTime(now, now + 0.005), None)


def _session() -> tuple[Session, _Device, list]:
    player = Player(OUT_RATE)
    session = Session(_Answerer(), player, Persona("t", "Be brief."), SessionConfig())
    # The session clock starts with the microphone's first samples, a second ago.
    session.timeline.push_audio(np.zeros(RATE, np.float32), RATE, time.monotonic() - 1.0)
    events: list = []
    session.subscribe(events.append)
    return session, _Device(player), events


def _user_paused(session: Session, ago: float) -> None:
    """The user's speech ended `ago` seconds before now, on the session clock."""
    now = session.timeline.session_time(time.monotonic())
    assert now is not None
    session._now = now
    session._last_offset_t = now - ago


def test_a_retracted_answer_announced_late_is_neither_heard_nor_timed():
    session, device, events = _session()
    device.play()
    # The user paused: the listener prepares the answer (its audio held back).
    _user_paused(session, ago=0.05)
    session._prepare_turn()
    work = session._queue.popleft()
    # The worker makes the answer's first speech and announces it...
    session._run_unit(work)
    # ...but before the listener reads that, the user goes on: the answer is retracted.
    session._retract_turn()
    for _ in range(5):  # the listener's next ticks, with the speaker playing on
        session._drain_inbox()
        device.play(2)
        session._check_playback()

    latencies = [e.data for e in events if e.kind is EventKind.LATENCY]
    assert latencies == [], f"a retracted answer was timed: {latencies}"
    assert session.controller.state is DuplexState.LISTENING
    states = [e.data["state"] for e in events if e.kind is EventKind.STATE]
    assert "speaking" not in states
    assert session.player.heard(1).samples == 0  # not a sample of it reached the speaker
    # Its words were shown as they came; the retraction says which answer to take back.
    retracted = [e.data for e in events if e.kind is EventKind.PREPARED][-1]
    assert retracted == {"retracted": True, "response": 1}


def test_a_retracted_answer_says_nothing_more():
    session, device, events = _session()
    device.play()
    _user_paused(session, ago=0.05)
    session._prepare_turn()
    work = session._queue.popleft()  # the worker has taken it...
    session._retract_turn()  # ...and the user goes on before it produced anything
    session._run_unit(work)  # what it makes now is dropped
    for _ in range(3):
        session._drain_inbox()
        device.play(2)
        session._check_playback()
    assert not [e for e in events if e.kind in (EventKind.TEXT, EventKind.LATENCY)]
    assert session.player.heard(1).samples == 0
    # The retraction's interrupt may come before the backend has made the answer's stop
    # flag (a fresh one per answer): once the answer runs, it is stopped again, or the
    # whole answer would be made for nothing ahead of the next one (found in a bench run:
    # an answer 2.2 s late behind an early answer retracted 20 ms after it began).
    assert session.backend.interrupts == 2


def test_an_answer_that_plays_is_timed_from_the_end_of_the_users_speech():
    session, device, events = _session()
    device.play()
    silence = session.config.duplex.end_of_turn_silence
    # The user stopped talking a whole end-of-turn silence ago; the answer was prepared
    # then, and is due now.
    _user_paused(session, ago=silence)
    session._prepare_turn()
    work = session._queue.popleft()
    session._run_unit(work)
    session._drain_inbox()
    device.play(3)  # held: the end of the turn is not certain yet
    session._check_playback()
    assert not [e for e in events if e.kind is EventKind.LATENCY]
    session._end_turn(session._now)
    for _ in range(5):
        session._drain_inbox()
        device.play(2)
        session._check_playback()

    latencies = [e.data for e in events if e.kind is EventKind.LATENCY]
    assert [d["kind"] for d in latencies] == ["turn_taking"]
    # The answer was held until the turn's end was certain: never faster than that wait.
    # (Less one device block: this test's blocks come faster than real time.)
    assert silence - BLOCK / OUT_RATE <= latencies[0]["seconds"] < silence + 0.5


def test_an_early_answer_is_not_sent_on_a_sliver_of_audio():
    from app.flow.duplex import Action
    from app.flow.vad import VadEvent, VadKind

    session, _, events = _session()
    ctl = session.controller
    ctl.on_vad(VadEvent(VadKind.ONSET, 0.5, 0.564))
    # One silent window after the speech: an early answer is asked for...
    assert ctl.on_clock(1.0, speech_until=0.96) == [Action.PREPARE_TURN]
    # ...but the unit gathered so far is shorter than a final unit may be: padded with
    # silence, it would stay inside the user's speech if the answer were retracted.
    session._prepare_turn()
    assert session._speculation is None and not session._queue
    assert not [e for e in events if e.kind is EventKind.PREPARED]
    assert ctl.on_clock(1.02, speech_until=0.96) == [Action.PREPARE_TURN]  # asked again
