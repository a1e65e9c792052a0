"""The duplex controller's rules, fed with voice-activity events on a known clock."""

from __future__ import annotations

import pytest

from app.flow.duplex import Action, DuplexConfig, DuplexController, DuplexState
from app.flow.vad import VadEvent, VadKind


def config(**kwargs) -> DuplexConfig:
    """Settings for the rule under test; speculation has its own tests below."""
    kwargs.setdefault("speculate_after", None)
    kwargs.setdefault("speculate_on_silence", None)
    return DuplexConfig(**kwargs)


def onset(t: float, lag: float = 0.064) -> VadEvent:
    return VadEvent(VadKind.ONSET, t, t + lag)


def offset(t: float, lag: float = 0.1) -> VadEvent:
    return VadEvent(VadKind.OFFSET, t, t + lag)


def speaking_controller(**settings) -> DuplexController:
    ctl = DuplexController(config(**settings))
    ctl.on_vad(onset(1.0))
    ctl.on_vad(offset(2.5))
    assert ctl.on_clock(3.2) == [Action.END_TURN]
    ctl.on_model_speech(3.4)
    assert ctl.state is DuplexState.SPEAKING
    return ctl


def test_end_of_turn_fires_after_the_configured_silence_and_only_once():
    ctl = DuplexController(config(end_of_turn_silence=0.6))
    assert ctl.on_vad(onset(1.0)) == []
    assert ctl.on_vad(offset(2.5)) == []
    assert ctl.on_clock(3.09) == []
    assert ctl.on_clock(3.1) == [Action.END_TURN]
    assert ctl.state is DuplexState.RESPONDING
    assert ctl.on_clock(4.0) == []


def test_a_pause_shorter_than_the_silence_does_not_end_the_turn():
    ctl = DuplexController(config(end_of_turn_silence=0.6))
    ctl.on_vad(onset(1.0))
    ctl.on_vad(offset(2.5))
    ctl.on_vad(onset(2.9))
    assert ctl.on_clock(3.5) == []
    ctl.on_vad(offset(4.0))
    assert ctl.on_clock(4.6) == [Action.END_TURN]


def test_a_backchannel_pauses_then_resumes_without_interrupting():
    ctl = speaking_controller(barge_in_min_speech=0.3, resume_delay=0.25)
    assert ctl.on_vad(onset(5.0)) == [Action.PAUSE_PLAYBACK]
    assert ctl.on_clock(5.2) == []
    assert ctl.on_vad(offset(5.2, lag=0.1)) == []  # wait a moment for more speech
    assert ctl.on_clock(5.44) == []
    assert ctl.on_clock(5.45) == [Action.RESUME_PLAYBACK]
    assert ctl.state is DuplexState.SPEAKING
    assert (ctl.backchannels, ctl.barge_ins) == (1, 0)


def test_short_pieces_close_together_add_up_to_a_barge_in():
    """ "Wait... stop... I have a question": each piece alone is backchannel-short."""
    ctl = speaking_controller(barge_in_min_speech=0.5, resume_delay=0.35)
    assert ctl.on_vad(onset(5.0)) == [Action.PAUSE_PLAYBACK]
    ctl.on_vad(offset(5.3))  # 0.3 s
    assert ctl.on_vad(onset(5.5)) == []  # still paused: no new pause, no resume
    assert ctl.on_clock(5.69) == []  # 0.3 + 0.19
    assert ctl.on_clock(5.7) == [Action.BARGE_IN]
    assert ctl.burst_start == 5.0
    assert ctl.backchannels == 0


def test_pieces_far_apart_are_separate_backchannels():
    ctl = speaking_controller(barge_in_min_speech=0.5, resume_delay=0.25)
    ctl.on_vad(onset(5.0))
    ctl.on_vad(offset(5.3))
    assert ctl.on_clock(5.6) == [Action.RESUME_PLAYBACK]
    assert ctl.on_vad(onset(6.5)) == [Action.PAUSE_PLAYBACK]
    ctl.on_vad(offset(6.8))
    assert ctl.on_clock(7.1) == [Action.RESUME_PLAYBACK]
    assert (ctl.backchannels, ctl.barge_ins) == (2, 0)
    assert ctl.on_vad(onset(7.5)) == [Action.PAUSE_PLAYBACK]
    assert ctl.on_clock(8.0) == [Action.BARGE_IN]  # judged afresh: 0.5 s of its own
    assert ctl.burst_start == 7.5


def judging_words(**settings) -> DuplexController:
    """Speaking, with the word classifier answering JUDGE_BURST (burst_kind.py)."""
    settings.setdefault("end_of_turn_silence", 0.6)
    ctl = DuplexController(config(**settings), judge_bursts=True)
    ctl.on_vad(onset(1.0))
    ctl.on_vad(offset(2.5))
    assert ctl.on_clock(3.2) == [Action.END_TURN]
    ctl.on_model_speech(3.4)
    return ctl


def test_with_the_word_classifier_a_short_utterance_is_judged_when_it_ends():
    ctl = judging_words(barge_in_min_speech=0.5, burst_judge_max=1.0, resume_delay=0.35)
    assert ctl.on_vad(onset(5.0)) == [Action.PAUSE_PLAYBACK]
    assert ctl.on_clock(5.6, speech_until=5.6) == []  # 0.6 s: no barge-in by length yet
    assert ctl.on_vad(offset(5.7)) == [Action.JUDGE_BURST]
    # "okay": a backchannel; playback resumes once the resume delay has passed.
    assert ctl.on_burst_judged(False, 5.8) == []
    assert ctl.on_clock(6.05) == [Action.RESUME_PLAYBACK]
    assert (ctl.backchannels, ctl.barge_ins) == (1, 0)


def test_a_short_bid_for_the_floor_is_a_barge_in_and_opens_the_users_turn():
    ctl = judging_words(barge_in_min_speech=0.5, burst_judge_max=1.0, end_of_turn_silence=0.6)
    ctl.on_vad(onset(5.0))
    assert ctl.on_vad(offset(5.4)) == [Action.JUDGE_BURST]  # "Stop." 0.4 s
    assert ctl.on_burst_judged(True, 5.6) == [Action.BARGE_IN]
    assert ctl.state is DuplexState.LISTENING and ctl.barge_ins == 1
    # What they said is a turn of its own, timed from where it ended.
    assert ctl.on_clock(5.99) == []
    assert ctl.on_clock(6.0) == [Action.END_TURN]


def test_with_the_word_classifier_long_speech_is_still_a_barge_in_by_length():
    ctl = judging_words(barge_in_min_speech=0.5, burst_judge_max=1.0)
    ctl.on_vad(onset(5.0))
    assert ctl.on_clock(5.99, speech_until=5.99) == []
    assert ctl.on_clock(6.0, speech_until=6.0) == [Action.BARGE_IN]


def test_a_late_verdict_after_more_speech_changes_nothing():
    ctl = judging_words(barge_in_min_speech=0.5, burst_judge_max=1.0)
    ctl.on_vad(onset(5.0))
    ctl.on_vad(offset(5.3))
    ctl.on_vad(onset(5.45))  # more speech before the verdict was used
    assert ctl.on_burst_judged(True, 5.5) == []
    assert ctl.barge_ins == 0


def test_speech_that_goes_on_is_a_barge_in_then_a_new_turn():
    ctl = speaking_controller(barge_in_min_speech=0.3, end_of_turn_silence=0.5)
    assert ctl.on_vad(onset(5.0)) == [Action.PAUSE_PLAYBACK]
    assert ctl.on_clock(5.29) == []
    assert ctl.on_clock(5.3) == [Action.BARGE_IN]
    assert ctl.state is DuplexState.INTERRUPTED
    ctl.on_vad(offset(6.5))
    assert ctl.state is DuplexState.LISTENING
    assert ctl.on_clock(7.0) == [Action.END_TURN]
    assert ctl.barge_ins == 1


def test_an_onset_detected_late_is_a_barge_in_at_once():
    ctl = speaking_controller(barge_in_min_speech=0.2)
    assert ctl.on_vad(onset(5.0, lag=0.25)) == [Action.PAUSE_PLAYBACK, Action.BARGE_IN]


def test_talking_on_before_the_answer_starts_cancels_it():
    ctl = DuplexController(config(end_of_turn_silence=0.5, barge_in_min_speech=0.3))
    ctl.on_vad(onset(1.0))
    ctl.on_vad(offset(2.0))
    assert ctl.on_clock(2.5) == [Action.END_TURN]
    assert ctl.on_vad(onset(2.7)) == []  # nothing is playing: nothing to pause
    assert ctl.on_clock(3.0) == [Action.CANCEL_RESPONSE]
    assert ctl.barge_ins == 0


def test_playback_end_returns_the_floor():
    ctl = speaking_controller()
    ctl.on_playback_done(8.0)
    assert ctl.state is DuplexState.LISTENING


def test_native_duplex_gets_no_end_of_turn_but_still_barge_in():
    ctl = DuplexController(config(), native_duplex=True)
    ctl.on_vad(onset(1.0))
    ctl.on_vad(offset(2.0))
    assert ctl.on_clock(5.0) == []
    ctl.on_model_speech(5.5)
    ctl.on_vad(onset(6.0))
    assert Action.BARGE_IN in ctl.on_clock(6.6)


def test_force_listen_stops_the_assistant():
    ctl = speaking_controller()
    assert ctl.force_listen(4.0) == [Action.BARGE_IN]
    assert ctl.state is DuplexState.LISTENING
    assert ctl.force_listen(4.1) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"end_of_turn_silence": 0.0}, {"end_of_turn_silence": 9}, {"barge_in_min_speech": -1}],
)
def test_nonsense_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        DuplexConfig(**kwargs)


def test_an_answer_is_prepared_during_the_silence_and_released_at_its_end():
    ctl = DuplexController(DuplexConfig(end_of_turn_silence=0.6, speculate_after=0.15))
    ctl.on_vad(onset(1.0))
    assert ctl.on_vad(offset(2.0, lag=0.1)) == []
    assert ctl.on_clock(2.14) == []
    assert ctl.on_clock(2.16) == [Action.PREPARE_TURN]
    assert ctl.state is DuplexState.LISTENING  # nothing is certain yet
    assert ctl.on_clock(2.4) == []
    assert ctl.on_clock(2.6) == [Action.END_TURN]
    assert ctl.state is DuplexState.RESPONDING


def test_speech_during_the_silence_retracts_the_prepared_answer():
    ctl = DuplexController(DuplexConfig(end_of_turn_silence=0.6, speculate_after=0.15))
    ctl.on_vad(onset(1.0))
    ctl.on_vad(offset(2.0))
    assert ctl.on_clock(2.2) == [Action.PREPARE_TURN]
    assert ctl.on_vad(onset(2.4)) == [Action.RETRACT_TURN]
    assert ctl.on_clock(3.0) == []  # the turn goes on
    ctl.on_vad(offset(3.5))
    assert ctl.on_clock(3.7) == [Action.PREPARE_TURN]
    assert ctl.on_clock(4.1) == [Action.END_TURN]


def early(**kwargs) -> DuplexController:
    kwargs.setdefault("end_of_turn_silence", 0.6)
    return DuplexController(DuplexConfig(speculate_on_silence=0.032, **kwargs))


def test_an_answer_is_prepared_after_one_silent_window_before_the_pause_is_confirmed():
    ctl = early()
    ctl.on_vad(onset(1.0))
    assert ctl.on_clock(2.02, speech_until=2.0) == []
    assert ctl.on_clock(2.04, speech_until=2.0) == [Action.PREPARE_TURN]
    assert ctl.on_clock(2.06, speech_until=2.0) == []  # once
    # Voice activity confirms the pause: the answer prepared early is this pause's.
    assert ctl.on_vad(offset(2.0, lag=0.096)) == []
    assert ctl.on_clock(2.6) == [Action.END_TURN]


def test_speech_that_goes_on_before_the_pause_is_confirmed_retracts_the_early_answer():
    ctl = early()
    ctl.on_vad(onset(1.0))
    assert ctl.on_clock(2.04, speech_until=2.0) == [Action.PREPARE_TURN]
    assert ctl.on_clock(2.06, speech_until=2.064) == [Action.RETRACT_TURN]
    assert ctl.on_clock(2.08, speech_until=2.064) == []
    # The next silence prepares afresh; a confirmed pause and then new speech retracts.
    assert ctl.on_clock(2.1, speech_until=2.064) == [Action.PREPARE_TURN]
    ctl.on_vad(offset(2.064))
    assert ctl.on_vad(onset(2.4)) == [Action.RETRACT_TURN]
    assert ctl.on_clock(2.44, speech_until=2.44) == []


def test_a_declined_early_answer_is_asked_for_again_on_a_later_tick():
    ctl = early()
    ctl.on_vad(onset(1.0))
    assert ctl.on_clock(2.04, speech_until=2.0) == [Action.PREPARE_TURN]
    ctl.decline_speculation()  # the session had too little audio to send
    assert ctl.on_clock(2.06, speech_until=2.0) == [Action.PREPARE_TURN]
    assert ctl.on_clock(2.08, speech_until=2.0) == []


def test_no_early_answer_while_the_assistant_has_the_floor_or_for_a_native_model():
    ctl = early()
    ctl.on_vad(onset(1.0))
    ctl.on_vad(offset(2.0))
    ctl.on_clock(2.6)
    ctl.on_model_speech(2.8)
    ctl.on_vad(onset(3.0))  # the user talks over the answer
    assert Action.PREPARE_TURN not in ctl.on_clock(3.2, speech_until=3.1)
    native = DuplexController(DuplexConfig(speculate_on_silence=0.032), native_duplex=True)
    native.on_vad(onset(1.0))
    assert native.on_clock(2.1, speech_until=2.0) == []


def test_native_duplex_models_are_never_prepared_for():
    ctl = DuplexController(DuplexConfig(speculate_after=0.1), native_duplex=True)
    ctl.on_vad(onset(1.0))
    ctl.on_vad(offset(2.0))
    assert ctl.on_clock(2.5) == [] and ctl.on_clock(3.0) == []


def test_waiting_for_an_offset_does_not_lengthen_the_speech():
    """VAD confirms an offset ~0.1 s after the speech ends; that wait is not speech."""
    ctl = speaking_controller(barge_in_min_speech=0.5)
    ctl.on_vad(onset(5.0))
    assert ctl.on_clock(5.55, speech_until=5.4) == []  # 0.4 s heard so far
    ctl.on_vad(offset(5.4))
    assert ctl.barge_ins == 0


def test_a_native_model_talking_over_the_user_is_not_a_barge_in():
    """The model chose to speak while the user talks (its own "mm-hm"): its call. Only
    speech the user starts over the assistant is judged."""
    ctl = DuplexController(config(barge_in_min_speech=0.3), native_duplex=True)
    ctl.on_vad(onset(1.0))
    assert ctl.on_model_speech(1.5) == []
    assert ctl.on_clock(3.0) == []  # 2 s of overlap: not a barge-in
    assert ctl.on_vad(offset(3.0)) == []
    assert ctl.state is DuplexState.SPEAKING and ctl.backchannels == 0
    # The user starts again over the assistant: that one is judged.
    assert ctl.on_vad(onset(4.0)) == [Action.PAUSE_PLAYBACK]
    assert ctl.on_clock(4.4) == [Action.BARGE_IN]


def test_the_user_turn_stays_open_through_a_pause():
    ctl = DuplexController(config(end_of_turn_silence=0.6), native_duplex=True)
    assert not ctl.user_turn_open
    ctl.on_vad(onset(1.0))
    assert ctl.user_turn_open
    ctl.on_vad(offset(2.0))
    assert ctl.on_clock(2.3) == [] and ctl.user_turn_open  # a pause, maybe mid-sentence
    ctl.on_clock(2.6)
    assert not ctl.user_turn_open
