"""A native-duplex model (the tiny Moshi) through the real flow, live, in a virtual room.

The model answers every 80 ms frame, speaking or listening; these tests check that the
session reads that stream as a conversation: the duplex state changes only where a run
of speech starts or ends (as heard), each run is one response, the stream plays without
a gap while the model keeps up, and a barge-in silences the output at once and mutes the
model while the user holds the floor. PausingMoshi gives the random model known pauses.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
from live_conversation import LiveConversation, rms_db, window
from pausing_moshi import PausingMoshi
from speech import needs_espeak, speak

from app.flow.events import EventKind
from app.model.contract import ModelSource, Persona, Quant

moshi_tiny_factory = tiny_models.moshi_tiny_factory

pytestmark = pytest.mark.slow

FRAME = 0.08
AUDIBLE_DB = -40.0
SILENT_DB = -60.0
PERSONA = Persona("test", "You are a helpful assistant.")


def _moshi(folder, speaks) -> PausingMoshi:
    backend = PausingMoshi(speaks, device="cpu")
    backend.load(ModelSource(local_dir=folder), Quant.BF16, lambda *_: None)
    return backend


def _audible_throughout(track: np.ndarray, rate: int, start: float, end: float) -> list[float]:
    """Start times of the 10 ms blocks in [start, end) that were not audible (gaps)."""
    block = rate // 100
    gaps = []
    for i in range(int(start * 100), int(end * 100)):
        if rms_db(track[i * block : (i + 1) * block]) < AUDIBLE_DB:
            gaps.append(i / 100)
    return gaps


def test_runs_of_speech_are_responses_and_play_without_a_gap(moshi_tiny_factory, tmp_path):
    runs = [(4, 19), (36, 50)]  # frames the model speaks in: 0.32-1.52 s and 2.88-4.0 s
    backend = _moshi(moshi_tiny_factory(), lambda i: any(a <= i < b for a, b in runs))
    with LiveConversation(None, tmp_path, backend=backend, persona=PERSONA) as conv:
        conv.wait_until(5.6)  # the second run's END_OF_TURN comes 6 quiet frames after it
    states = conv.states()
    changes = [(round(t, 2), s) for t, s in states[1:]]  # after "session started"
    assert [s for _, s in changes] == ["speaking", "listening"] * 2, changes
    times = [t for t, _ in states]
    assert times == sorted(times), f"state changes out of order: {states}"
    speaking = [e for e in conv.events if e.kind is EventKind.STATE and e.data["state"] ==
                "speaking"]
    finished = [e for e in conv.events if e.kind is EventKind.STATE and e.data["state"] ==
                "listening" and e.data["reason"] == "assistant finished"]
    assert [e.data["response"] for e in speaking] == [1, 2]  # one response per run
    assert len(finished) == 2
    for (first, last), spoke, done in zip(runs, speaking, finished, strict=True):
        # Heard within half a second of the frame it was made in (frame, cushion, blocks),
        # and over once its END_OF_TURN, 6 quiet frames after the run, was heard.
        assert first * FRAME < spoke.t < first * FRAME + 0.5, (first, spoke.t)
        assert (last + 5) * FRAME < done.t < (last + 6) * FRAME + 0.5, (last, done.t)
    texts = {e.data["response"] for e in conv.events if e.kind is EventKind.TEXT}
    assert texts <= {1, 2}, texts  # every word belongs to the run that spoke it

    # One steady stream: no underrun, and every 10 ms of each run was heard.
    assert conv.player.underruns == 0, conv.session.metrics.summary()
    recording, rate = conv.recording()
    right = recording[:, 1]
    for (first, last), spoke in zip(runs, speaking, strict=True):
        length = (last - first) * FRAME
        gaps = _audible_throughout(right, rate, spoke.t + 0.02, spoke.t + length - 0.03)
        assert not gaps, f"the run heard from {spoke.t:.2f} s fell silent at {gaps}"
    # The model listened in silence between the runs.
    assert rms_db(window(right, rate, finished[0].t + 0.05, speaking[1].t - 0.05)) < SILENT_DB


@needs_espeak
def test_barge_in_silences_within_a_block_and_mutes_the_model(moshi_tiny_factory, tmp_path):
    backend = _moshi(moshi_tiny_factory(), lambda i: i >= 3)  # talks from 0.24 s on
    interrupts: list[float] = []
    silenced: list[float] = []
    interruption = speak("Wait, stop, I have another question for you.")
    with LiveConversation(None, tmp_path, backend=backend, persona=PERSONA) as conv:
        real_interrupt = backend.interrupt
        backend.interrupt = lambda: (interrupts.append(conv.room.now), real_interrupt())
        for name in ("pause", "flush"):
            real = getattr(conv.player, name)
            setattr(conv.player, name,
                    lambda real=real: (silenced.append(conv.room.now), real()))
        speaking = conv.wait_for(EventKind.STATE, 10, state="speaking")
        conv.wait_until(speaking.t + 1.5)
        barge_at = conv.say(interruption)
        barge_end = barge_at + len(interruption) / 16000
        cut = conv.wait_for(EventKind.STATE, 10, after=barge_at, state="interrupted")
        again = conv.wait_for(EventKind.STATE, 10, after=barge_end, state="speaking")
        stop = conv.wait_for(EventKind.LATENCY, 10, kind="stop")
    assert conv.session.controller.barge_ins == 1, conv.states()
    assert interrupts, "the model was never told to stop"
    assert silenced and barge_at < silenced[0] < barge_at + 0.3, (barge_at, silenced)
    recording, rate = conv.recording()
    right = recording[:, 1]
    # It was talking; from the block after the pause on, nothing more was heard while the
    # user spoke (one 10 ms device block, plus the recording resampler's ring-down).
    assert rms_db(window(right, rate, silenced[0] - 0.3, silenced[0] - 0.05)) > AUDIBLE_DB
    assert rms_db(window(right, rate, silenced[0] + 0.015, barge_end)) < SILENT_DB
    assert 0.0 < stop.data["seconds"] < 0.25
    # The model itself was muted while the user held the floor (their pauses between
    # words included), and let go once their turn had ended.
    first = int(cut.t / FRAME) + 2  # the frames stepped after the barge-in was acted on
    last = int(barge_end / FRAME)
    assert all(backend.muted[first:last]), backend.muted[first:last]
    assert not all(backend.muted[last:])  # it spoke again, unmuted
    assert again.data["response"] > 1 and again.t > barge_end + 0.4, (barge_end, again)
