"""Voice activity: onsets and offsets land where the speech is, not in silence or noise."""

from __future__ import annotations

import numpy as np
import pytest
from speech import babble, needs_espeak, silence, speak

from app.flow.vad import VadKind, VoiceActivity

RATE = 16000

pytestmark = needs_espeak


def run(vad: VoiceActivity, audio: np.ndarray, block: int = 320):
    events = []
    for start in range(0, len(audio), block):
        events += vad.feed(audio[start : start + block], start / RATE)
    return events


def test_one_utterance_gives_one_onset_and_one_offset_at_its_edges():
    words = speak("Could you tell me what you see on the table?")
    audio = np.concatenate([silence(1.0), words, silence(1.0)])
    events = run(VoiceActivity(), audio)
    kinds = [e.kind for e in events]
    assert kinds == [VadKind.ONSET, VadKind.OFFSET], events
    onset, offset = events
    end = 1.0 + len(words) / RATE
    assert abs(onset.t - 1.0) < 0.15
    assert abs(offset.t - end) < 0.2
    # Decisions come fast: an onset within ~0.1 s, an offset within ~0.2 s.
    assert onset.detected_at - onset.t < 0.12
    assert offset.detected_at - offset.t < 0.2


def test_silence_and_quiet_noise_give_no_events():
    rng = np.random.default_rng(0)
    noise = (0.003 * rng.standard_normal(3 * RATE)).astype(np.float32)
    assert run(VoiceActivity(), np.concatenate([silence(1.0), noise])) == []


def test_block_size_does_not_change_the_decisions():
    words = speak("Yes. I think so.")
    audio = np.concatenate([silence(0.5), words, silence(0.8)])
    a = [(e.kind, round(e.t, 3)) for e in run(VoiceActivity(), audio, block=160)]
    b = [(e.kind, round(e.t, 3)) for e in run(VoiceActivity(), audio, block=4801)]
    assert a == b and a


@pytest.mark.parametrize("gap", [0.6, 1.0])
def test_two_utterances_with_a_pause_are_two_segments(gap):
    first, second = speak("Hello there."), speak("How are you today?")
    audio = np.concatenate([silence(0.5), first, silence(gap), second, silence(0.6)])
    kinds = [e.kind for e in run(VoiceActivity(), audio)]
    assert kinds == [VadKind.ONSET, VadKind.OFFSET] * 2


def test_babble_far_below_the_user_does_not_hold_their_speech_open():
    """Far-off talkers at -38 dBFS score as speech to silero all the time; the user's
    speech must still end where it ends, and the babble alone must not start it again
    (the benchmark's noise_babble_turn held the turn open forever)."""
    words = speak("Where is the nearest train station?")
    start, end = 0.8, 0.8 + len(words) / RATE
    audio = babble(end + 4.0, -38.0)
    audio[round(start * RATE) : round(start * RATE) + len(words)] += words
    events = run(VoiceActivity(), audio)
    offsets = [e for e in events if e.kind is VadKind.OFFSET and e.t > end - 0.3]
    assert offsets, f"the user's speech never ended: {events}"
    assert offsets[0].t - end < 0.35 and offsets[0].detected_at - end < 0.6
    assert not [e for e in events if e.kind is VadKind.ONSET and e.t > end], events


def test_a_user_who_steps_back_from_the_microphone_is_still_heard():
    """12 dB quieter than they were: below the floor under their earlier level, but
    well above a quiet room, so it is their speech, and it ends where it ends."""
    first = speak("Tell me something interesting about octopuses.")
    second = speak("How many hearts do they have?") * np.float32(10 ** (-12 / 20))
    audio = np.concatenate([silence(0.5), first, silence(1.5), second, silence(0.8)])
    events = run(VoiceActivity(), audio)
    assert [e.kind for e in events] == [VadKind.ONSET, VadKind.OFFSET] * 2, events
    start = 0.5 + (len(first) / RATE) + 1.5
    end = start + len(second) / RATE
    assert abs(events[2].t - start) < 0.15 and abs(events[3].t - end) < 0.2
