"""Reading a native-duplex model's per-frame outputs as runs of speech (app/flow/native.py)."""

from __future__ import annotations

import numpy as np

from app.flow.native import RunReader
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
