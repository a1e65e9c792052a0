"""The whole app path, live: the tiny Qwen2.5-Omni model, the session, a virtual room.

The user is played by the test, reacting to the assistant as a person would. These
tests check behaviour with generous time bounds (the machine is shared); the latency
targets themselves are checked by `duetto bench duplex`, not here.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
from live_conversation import LiveConversation, rms_db, window
from speech import needs_espeak, speak

from app.flow.events import EventKind
from app.model.contract import SpeechChunk

qwen_tiny_factory = tiny_models.qwen_tiny_factory

pytestmark = [needs_espeak, pytest.mark.slow]

LONG_ANSWER = 300  # tokens: about 6 s of speech from the tiny model
SILENT_DB = -60.0
AUDIBLE_DB = -40.0


def backchannel() -> np.ndarray:
    """A 200 ms "uh-huh", faded out so it ends cleanly."""
    mm = speak("uh-huh")[: int(0.2 * 16000)].copy()
    mm[-800:] *= np.linspace(1.0, 0.0, 800, dtype=np.float32)
    return mm


def test_answer_backchannel_and_barge_in(qwen_tiny_factory, tmp_path):
    folder = qwen_tiny_factory(min_answer_tokens=LONG_ANSWER)
    question = speak("Could you tell me what you see on the table?")
    interruption = speak("Wait, stop, I have another question for you.")
    with LiveConversation(folder, tmp_path) as conv:
        conv.wait_until(0.3)
        asked = conv.say(question)
        question_end = asked + len(question) / 16000
        speaking = conv.wait_for(EventKind.STATE, 30, state="speaking")
        assert speaking.t > question_end  # it waited for the user's turn to end

        # Headphones: no echo path. The session needs about a second of the assistant's
        # voice to learn that, before it trusts the raw mic over the canceller's output.
        conv.wait_until(speaking.t + 1.5)
        mm_at = conv.say(backchannel())
        conv.wait_until(mm_at + 1.0)
        assert conv.session.controller.backchannels >= 1, "the 'uh-huh' was not even heard"
        assert conv.states()[-1][1] == "speaking", f"a backchannel interrupted: {conv.states()}"

        barge_at = conv.say(interruption)
        barge_end = barge_at + len(interruption) / 16000
        conv.wait_for(EventKind.STATE, 10, after=barge_at, state="interrupted")
        conv.wait_for(EventKind.STATE, 30, after=barge_end, state="speaking")
        heard = conv.wait_for(EventKind.HEARD, 10)
        stop = conv.wait_for(EventKind.LATENCY, 10, kind="stop")
    recording, rate = conv.recording()
    right = recording[:, 1]
    assert rms_db(window(right, rate, speaking.t, speaking.t + 0.4)) > AUDIBLE_DB
    # After the backchannel the answer carried on...
    assert rms_db(window(right, rate, mm_at + 0.5, barge_at)) > AUDIBLE_DB
    # ...and after the barge-in it went silent, and stayed silent while the user spoke.
    assert rms_db(window(right, rate, barge_at + 0.4, barge_end)) < SILENT_DB
    assert 0.0 < stop.data["seconds"] < 0.4
    assert isinstance(heard.data["text"], str)
    assert conv.session.controller.barge_ins == 1
    # The words told as they started to play (the subtitles) of the interrupted answer
    # begin with all it had played in full.
    rid = heard.data["response"]
    said = "".join(e.data["text"] for e in conv.events
                   if e.kind is EventKind.SPOKEN and e.data.get("response") == rid)
    assert said and said.startswith(heard.data["text"])


def test_a_click_lines_up_in_both_channels(qwen_tiny_factory, tmp_path):
    """The speaker's sound goes straight back into the mic: both channels must agree."""
    folder = qwen_tiny_factory()
    with LiveConversation(folder, tmp_path, echo_gain=1.0) as conv:
        conv.wait_until(1.0)
        click = np.zeros(4800, dtype=np.float32)
        click[2400] = 0.9
        conv.player.write(SpeechChunk(click, 24000, response_id=1000, seq=0))
        conv.player.end_response(1000)
        conv.wait_until(2.5)
    recording, rate = conv.recording()
    left = int(np.argmax(np.abs(recording[:, 0])))
    right = int(np.argmax(np.abs(recording[:, 1])))
    assert np.abs(recording[right, 1]) > 0.3
    assert abs(left - right) / rate <= 0.001, f"channels differ by {(left - right) / rate} s"


def room_impulse_response(rate: int = 48000) -> np.ndarray:
    """20 ms to the mic, then a decaying reverberant tail: a desk speaker in a room."""
    rng = np.random.default_rng(3)
    taps = int(0.05 * rate)
    tail = rng.standard_normal(taps) * np.exp(-np.arange(taps) / (0.008 * rate)) * 0.15
    ir = np.zeros(int(0.02 * rate) + taps, dtype=np.float32)
    ir[int(0.02 * rate)] = 0.5
    ir[int(0.02 * rate) :] += tail.astype(np.float32)
    return ir


def echo_level_db(room) -> float:
    """The mic's median level over the blocks where the speaker was playing."""
    levels = [rms_db(heard) for played, heard in zip(room.played, room.heard, strict=True)
              if rms_db(played) > -50]
    assert levels, "the speaker never played"
    return float(np.median(levels))


def test_echo_is_cancelled_and_never_barges_in_but_the_user_still_can(
    qwen_tiny_factory, tmp_path
):
    folder = qwen_tiny_factory(min_answer_tokens=LONG_ANSWER)
    ir = room_impulse_response()
    question = speak("Tell me a long story about the sea.")
    with LiveConversation(folder, tmp_path, impulse_response=ir) as conv:
        conv.wait_until(0.3)
        conv.say(question)
        first = conv.wait_for(EventKind.STATE, 30, state="speaking")
        done = conv.wait_for(EventKind.STATE, 30, after=first.t, state="listening")
        assert done.data["reason"] == "assistant finished", conv.states()
        # Echo return loss enhancement once the canceller has converged (3 s of speech).
        converged = [(m, c) for t, m, c in conv.cleaned if first.t + 3.0 <= t < done.t - 0.1]
        mic = np.concatenate([m for m, _ in converged])
        cleaned = np.concatenate([c for _, c in converged])
        erle = rms_db(mic) - rms_db(cleaned)
        assert rms_db(mic) > -45, "the echo is too quiet to measure anything"
        assert erle >= 30.0, f"echo reduced by only {erle:.1f} dB"

        # A second answer, and this time the user talks over it as loud as the echo.
        conv.say(speak("And then what happened?"))
        second = conv.wait_for(EventKind.STATE, 30, after=done.t, state="speaking")
        conv.wait_until(second.t + 3.5)
        echo_level = echo_level_db(conv.room)
        user = speak("No wait, stop there please, I want to ask something else.")
        user = user * (10 ** ((echo_level - rms_db(user)) / 20))
        barge_at = conv.say(user)
        conv.wait_for(EventKind.STATE, 10, after=barge_at, state="interrupted")
    states = [s for _, s in conv.states()]
    assert states.count("interrupted") == 1  # the user's, never the echo's



def test_a_pause_mid_thought_is_prepared_for_but_never_answered(qwen_tiny_factory, tmp_path):
    """The answer starts in the silence (to be ready at once) and is dropped unheard."""
    folder = qwen_tiny_factory()
    first = speak("I was thinking about the weekend and")
    second = speak("maybe we could go to the mountains.")
    with LiveConversation(folder, tmp_path) as conv:
        conv.wait_until(0.3)
        start = conv.say(first)
        pause_from = start + len(first) / 16000
        conv.wait_until(pause_from + 0.4)  # shorter than the end-of-turn silence
        resumed = conv.say(second)
        answer = conv.wait_for(EventKind.STATE, 30, state="speaking")
    states = conv.states()
    assert conv.session.retractions >= 1
    assert not [s for t, s in states if pause_from < t < resumed + 0.5 and s != "listening"]
    assert answer.t > resumed + len(second) / 16000
    recording, rate = conv.recording()
    assert rms_db(window(recording[:, 1], rate, pause_from, resumed + 0.3)) < SILENT_DB
