"""The end-of-turn model in a session: a finished question ends the turn soon after the
model is asked; a sentence cut mid-clause waits for the silence cap. Real voice activity
(silero-vad) and the real Smart Turn model hear espeak-ng speech through the session's
own tick path; the backend is a stand-in (no model weights here), the worker is not
started, so nothing but the listener's decisions is measured."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from app.flow.duplex import DuplexConfig
from app.flow.events import EventKind
from app.flow.player import Player
from app.flow.session import Session, SessionConfig
from app.flow.turn_end import JUDGE_AFTER, SmartTurn, TurnEndDetector, TurnJudge
from app.model.contract import BackendSpec, Control, Decision, Output, Persona, Unit
from tests.speech import needs_espeak, silence, speak

RATE = 16000
CAP = 1.2


class _Listener:
    """A turn-based backend that only listens (its answers are not under test)."""

    spec = BackendSpec(family="fake", unit_ms=500, audio_in_rate=RATE, audio_out_rate=24000,
                       frames_per_unit=1, native_duplex=False)

    def start(self, persona: Persona) -> None: ...

    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        return iter([Output(decision=Decision.LISTEN)])

    def interrupt(self) -> None: ...
    def retract(self) -> None: ...
    def heard(self, text: str) -> None: ...
    def close(self) -> None: ...


@pytest.fixture(scope="module")
def smart_turn():
    return SmartTurn()


def _turn_end_after_speech(text: str, judge: TurnJudge) -> tuple[float, list]:
    """Seconds from the end of the user's speech (VAD's offset) to the end of the turn."""
    duplex = DuplexConfig(end_of_turn_silence=CAP, judge_after=JUDGE_AFTER)
    session = Session(_Listener(), Player(24000), Persona("t", "Be brief."),
                      SessionConfig(duplex=duplex, echo_cancellation=False), turn_judge=judge)
    events: list = []
    session.subscribe(events.append)
    audio = np.concatenate([silence(0.5), speak(text), silence(2.0)])
    session.timeline.push_audio(audio, RATE, time.monotonic() - len(audio) / RATE)
    while (tick := session.timeline.wait_unit(timeout=0)) is not None:
        session._process_tick(tick)
        # Ticks come faster than real time here: let a verdict asked for on this tick
        # arrive before the next, as it would within a 20 ms tick with the real model's
        # compute at most that long.
        session.turn_judging.wait()
    session.turn_judging.close()
    ended = [e.t for e in events if e.kind is EventKind.STATE and e.data["state"] == "responding"]
    assert len(ended) == 1, "the turn must end exactly once"
    return ended[0] - session._last_offset_t, events


@needs_espeak
def test_a_finished_question_ends_the_turn_when_the_model_is_asked(smart_turn):
    wait, events = _turn_end_after_speech(
        "What time is it?", TurnJudge(TurnEndDetector(smart_turn)))
    judged = [e.data for e in events if e.kind is EventKind.TURN_JUDGED]
    assert judged and judged[-1]["complete"]
    # Asked once the pause is confirmed, about a 0.2 s pause: the turn ends when the
    # pause is that old, or when the verdict existed if the call took longer (on a small
    # machine it is made on the listener, whose clock stands still meanwhile); far
    # before the cap either way.
    due = max(JUDGE_AFTER, judged[-1]["silence"] + judged[-1]["seconds"])
    assert due - 0.01 <= wait <= due + 0.03


@needs_espeak
def test_a_sentence_cut_mid_clause_waits_for_the_silence_cap(smart_turn):
    wait, events = _turn_end_after_speech(
        "I was wondering if you could,", TurnJudge(TurnEndDetector(smart_turn)))
    judged = [e.data for e in events if e.kind is EventKind.TURN_JUDGED]
    assert judged and not judged[-1]["complete"]
    assert CAP - 0.01 <= wait <= CAP + 0.05


@needs_espeak
def test_without_the_model_the_turn_ends_at_the_cap():
    wait, events = _turn_end_after_speech("What time is it?", TurnJudge(None))
    assert not [e for e in events if e.kind is EventKind.TURN_JUDGED]
    assert CAP - 0.01 <= wait <= CAP + 0.05


@needs_espeak
def test_a_model_that_is_missing_is_said_once_and_the_silence_decides():
    judge = TurnJudge(None, failure="the end-of-turn model ships in the 'pipecat-ai' package, "
                                    "which is not installed")
    wait, events = _turn_end_after_speech("What time is it?", judge)
    errors = [e.data["message"] for e in events if e.kind is EventKind.ERROR]
    assert len(errors) == 1 and "pipecat-ai" in errors[0] and "1.2 s of silence" in errors[0]
    assert CAP - 0.01 <= wait <= CAP + 0.05
