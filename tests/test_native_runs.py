"""Reading a native-duplex model's per-frame outputs as runs of speech (app/flow/native.py)."""

from __future__ import annotations

import numpy as np

from app.flow.native import RunReader, StandIn
from app.model.contract import Decision, Output, SpeechChunk


def _frame(decision: Decision, rid: int, text: str = "") -> list[Output]:
    out = [Output(decision=decision)]
    if text:
        out.append(Output(text=text))
    out.append(Output(speech=SpeechChunk(np.zeros(1920, np.float32), 24000, rid, 0, text)))
    return out


def test_a_run_starts_at_its_first_speak_and_ends_at_end_of_turn():
    S, L, E = Decision.SPEAK, Decision.LISTEN, Decision.END_OF_TURN
    script = [(L, 0), (S, 1), (L, 1), (S, 1), (L, 1), (E, 1), (L, 1), (S, 2), (E, 2)]
    reader = RunReader()
    frames = [f for d, rid in script for f in reader.frames(_frame(d, rid, "hi" * (d is S)))]
    assert [f.starts for f in frames] == [None, 1, None, None, None, None, None, 2, None]
    assert [f.ends for f in frames] == [None] * 5 + [1, None, None, 2]
    assert frames[1].text == "hi" and frames[1].speech.response_id == 1
    assert reader.current is None


def test_a_run_cut_by_a_mute_ends_when_the_next_begins():
    reader = RunReader()
    outs = _frame(Decision.SPEAK, 1) + _frame(Decision.LISTEN, 1) + _frame(Decision.SPEAK, 2)
    frames = list(reader.frames(outs))  # one unit of three frames
    assert [(f.starts, f.ends) for f in frames] == [(1, None), (None, None), (2, 1)]


def test_a_step_without_speech_gets_a_silent_stand_in_and_its_runs_are_numbered():
    """A text-only native family (MiniCPM-o before its speech path): one unit a step,
    each yields decisions and text but no speech."""
    S, L, E = Decision.SPEAK, Decision.LISTEN, Decision.END_OF_TURN
    steps = [
        [Output(decision=L)],
        [Output(decision=S), Output(text="hello")],
        [Output(decision=S), Output(text=" there"), Output(decision=E)],
        [Output(decision=L)],
        [Output(decision=S), Output(text="again")],
        [Output(decision=E)],  # a forced listen closed the turn before any word
    ]
    reader = RunReader()
    stand_in = StandIn(1.0, 24000)
    frames = [list(reader.frames(step, stand_in)) for step in steps]
    assert [len(f) for f in frames] == [1, 1, 2, 1, 1, 1]
    flat = [f for step in frames for f in step]
    assert [f.starts for f in flat] == [None, 1, None, None, None, 2, None]
    assert [f.ends for f in flat] == [None, None, None, 1, None, None, 2]
    # Every step brought exactly one second of silence, in the run it belongs to.
    chunks = [f.speech for f in flat if f.speech is not None]
    assert len(chunks) == len(steps)
    assert all(c.audio.shape == (24000,) and not c.audio.any() for c in chunks)
    assert [c.response_id for c in chunks] == [0, 1, 1, 1, 2, 2]
    # The unit that ended the turn: its words and silence first, then the end.
    assert frames[2][0].text == " there" and frames[2][0].speech is not None
    assert frames[2][1].decision is E and frames[2][1].speech is None
    assert reader.current is None


def test_a_step_with_its_own_speech_gets_no_stand_in():
    reader = RunReader()
    frames = list(reader.frames(_frame(Decision.SPEAK, 7, "hi"), StandIn(1.0, 24000)))
    assert len(frames) == 1 and frames[0].speech.audio.shape == (1920,)
    assert frames[0].starts == 7
