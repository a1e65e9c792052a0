"""The duplex benchmark's scoring on hand-made recordings whose answers are known.

The user's track is real espeak speech placed at exact samples; the assistant's track is
a tone that starts and stops at exact samples, as the app's player output would.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
from speech import needs_espeak, speak

from app.bench import scoring
from app.bench.duplex import score_folder, summarize

RATE = 24000


def _tone(seconds: float, level: float = 0.1) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _place(track: np.ndarray, at: float, audio: np.ndarray) -> tuple[float, float]:
    start = round(at * RATE)
    track[start : start + len(audio)] += audio
    return start / RATE, (start + len(audio)) / RATE


def _voice(text: str) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(speak(text), 3, 2).astype(np.float32)  # 16 kHz -> 24 kHz


def _text(rid: int, t: float, words: int) -> dict:
    return {"event": "text", "t": t, "response": rid, "text": " ".join(["word"] * words)}


# ------------------------------------------------------------------ segmentation
def test_level_segments_are_sample_exact_and_merge_short_gaps():
    x = np.zeros(RATE * 4, np.float32)
    _place(x, 0.5, _tone(0.7))
    _place(x, 1.5, _tone(0.3))  # 0.3 s gap: merged with the first
    _place(x, 2.6, _tone(0.5))  # 0.8 s gap: its own segment
    segs = scoring.level_segments(x, RATE)
    assert len(segs) == 2
    assert segs[0][0] == pytest.approx(0.5, abs=2 / RATE)  # a sine starts at 0
    assert segs[0][1] == pytest.approx(1.8, abs=2 / RATE)
    assert segs[1] == pytest.approx((2.6, 3.1), abs=2 / RATE)


def test_level_segments_ignore_quiet_hiss():
    x = (1e-4 * np.random.default_rng(0).standard_normal(RATE * 2)).astype(np.float32)
    assert scoring.level_segments(x, RATE) == []


def test_merge_joins_only_gaps_within_the_limit():
    assert scoring.merge([(0, 1), (1.4, 2), (3, 4)], 0.5) == [(0, 2), (3, 4)]
    assert scoring.merge([(3, 4), (0, 1)], 0.5) == [(0, 1), (3, 4)]


@needs_espeak
def test_vad_segments_snap_to_the_speech_edges():
    voice = _voice("Could you tell me what you see on the table?")
    x = np.zeros(RATE * 5, np.float32)
    start, end = _place(x, 1.0, voice)
    segs = scoring.vad_segments(x, RATE)
    assert len(segs) == 1
    assert segs[0][0] == pytest.approx(start, abs=0.01)
    assert segs[0][1] == pytest.approx(end, abs=0.01)


# ------------------------------------------------------------------ the rules
def test_takeover_rule_of_full_duplex_bench_v1():
    assert scoring.takeover([], 0).tor == 0
    assert scoring.takeover([(1.0, 1.6)], 2).tor == 0  # 0.6 s, 2 words: not a takeover
    assert scoring.takeover([(1.0, 1.6)], 4).tor == 1  # short but 4 words
    assert scoring.takeover([(1.0, 2.2)], 1).tor == 1  # over a second
    # Duration spans the first start to the last end, gaps included.
    assert scoring.takeover([(1.0, 1.3), (1.8, 2.1)], 1).tor == 1


def _score(user: np.ndarray, assistant: np.ndarray, lines: list[dict], events: list[dict]):
    task = {"scenario": "hand-made", "lines": lines}
    return scoring.score_recording(user, assistant, RATE, task, events)


@needs_espeak
def test_a_300_ms_response_gap_scores_0_30_s():
    user = np.zeros(RATE * 6, np.float32)
    assistant = np.zeros_like(user)
    start, end = _place(user, 0.5, _voice("What is the capital of France?"))
    _place(assistant, end + 0.3, _tone(2.0))
    lines = [{"text": "q", "expect": "respond", "start": start, "end": end}]
    score = _score(user, assistant, lines, [_text(1, end + 0.1, 6)])
    line = score["lines"][0]
    assert line["tor"] == 1
    assert line["latency"] == pytest.approx(0.30, abs=0.001)
    assert line["response_latency"] == pytest.approx(0.30, abs=0.01)  # v1.5, from the VAD


@needs_espeak
def test_a_two_word_answer_of_0_6_s_is_not_a_takeover():
    user = np.zeros(RATE * 6, np.float32)
    assistant = np.zeros_like(user)
    start, end = _place(user, 0.5, _voice("Are you there?"))
    _place(assistant, end + 0.4, _tone(0.6))
    lines = [{"text": "q", "expect": "respond", "start": start, "end": end}]
    line = _score(user, assistant, lines, [_text(1, end + 0.2, 2)])["lines"][0]
    assert line["tor"] == 0
    assert "latency" not in line
    assert line["output_seconds"] == pytest.approx(0.6, abs=0.002)


@needs_espeak
def test_a_120_ms_overlap_scores_0_12_s_stop_latency():
    user = np.zeros(RATE * 10, np.float32)
    assistant = np.zeros_like(user)
    q0, q1 = _place(user, 0.5, _voice("Tell me a story."))
    _place(assistant, q1 + 0.5, _tone(3.0))  # the answer, interrupted 1 s in
    i0, i1 = _place(user, q1 + 1.5, _voice("Wait, make it shorter."))
    # The answer stops 120 ms after the user starts: cut the tone there.
    assistant[round((i0 + 0.12) * RATE) :] = 0
    _place(assistant, i1 + 0.45, _tone(1.5))  # the answer to the interruption
    lines = [
        {"text": "q", "expect": "respond", "start": q0, "end": q1},
        {"text": "i", "expect": "interrupt", "start": i0, "end": i1},
    ]
    events = [_text(1, q1 + 0.2, 20), {"event": "heard", "t": i0 + 0.2, "response": 1,
                                       "text": "once upon"}, _text(2, i1 + 0.2, 8)]
    score = _score(user, assistant, lines, events)
    assert score["lines"][0]["tor"] == 1
    interrupt = score["lines"][1]
    assert interrupt["valid"]
    assert interrupt["stop_latency"] == pytest.approx(0.12, abs=0.01)
    assert interrupt["tor"] == 1
    assert interrupt["latency"] == pytest.approx(0.45, abs=0.001)
    assert interrupt["response_latency"] == pytest.approx(0.45, abs=0.01)


@needs_espeak
def test_an_answer_the_user_cuts_short_still_took_the_turn():
    user = np.zeros(RATE * 8, np.float32)
    assistant = np.zeros_like(user)
    q0, q1 = _place(user, 0.5, _voice("Tell me a story."))
    _place(assistant, q1 + 0.5, _tone(0.7))  # 0.5 s of answer, then the user cuts in
    i0, i1 = _place(user, q1 + 1.0, _voice("Wait."))
    lines = [
        {"text": "q", "expect": "respond", "start": q0, "end": q1},
        {"text": "i", "expect": "interrupt", "start": i0, "end": i1},
    ]
    events = [_text(1, q1 + 0.2, 20), {"event": "heard", "t": i0, "response": 1, "text": "once"}]
    assert _score(user, assistant, lines, events)["lines"][0]["tor"] == 1
    alone = [dict(lines[0])]  # the same short answer with no one cutting it: not a takeover
    assert _score(user, assistant, alone, events)["lines"][0]["tor"] == 0


@needs_espeak
def test_an_interruption_the_assistant_ignores_overlaps_to_its_end():
    user = np.zeros(RATE * 10, np.float32)
    assistant = np.zeros_like(user)
    q0, q1 = _place(user, 0.5, _voice("Tell me a story."))
    a0, _ = _place(assistant, q1 + 0.5, _tone(4.0))
    i0, i1 = _place(user, a0 + 1.0, _voice("Stop please."))
    lines = [
        {"text": "q", "expect": "respond", "start": q0, "end": q1},
        {"text": "i", "expect": "interrupt", "start": i0, "end": i1},
    ]
    interrupt = _score(user, assistant, lines, [_text(1, q1 + 0.2, 20)])["lines"][1]
    # The user finished before the assistant did: they overlap for the whole interruption.
    assert interrupt["stop_latency"] == pytest.approx(i1 - i0, abs=0.01)
    assert interrupt["tor"] == 0  # nothing new after it


@needs_espeak
def test_pause_handling_counts_speech_in_the_pause_as_a_takeover():
    user = np.zeros(RATE * 8, np.float32)
    assistant = np.zeros_like(user)
    a0, a1 = _place(user, 0.5, _voice("I was thinking about"))
    b0, b1 = _place(user, a1 + 1.5, _voice("the beach tomorrow."))
    _place(assistant, a1 + 0.9, _tone(1.2))  # it jumped in during the pause
    lines = [
        {"text": "a", "expect": "hold", "start": a0, "end": a1},
        {"text": "b", "expect": "respond", "start": b0, "end": b1},
    ]
    score = _score(user, assistant, lines, [_text(1, a1 + 0.8, 5)])
    assert score["lines"][0]["tor"] == 1  # lower is better: this is a failure
    assert score["lines"][1]["tor"] == 0  # and nothing answered the real end of turn


@needs_espeak
def test_speech_set_off_by_a_pause_counts_against_the_pause_even_if_it_starts_late():
    user = np.zeros(RATE * 8, np.float32)
    assistant = np.zeros_like(user)
    a0, a1 = _place(user, 0.5, _voice("I was thinking about"))
    b0, b1 = _place(user, a1 + 1.0, _voice("the beach tomorrow, what do you think?"))
    _place(assistant, b0 + 0.2, _tone(1.5))  # it started while the user was finishing
    lines = [
        {"text": "a", "expect": "hold", "start": a0, "end": a1},
        {"text": "b", "expect": "respond", "start": b0, "end": b1},
    ]
    score = _score(user, assistant, lines, [_text(1, b0, 5)])
    assert score["lines"][0]["tor"] == 1
    assert score["lines"][1]["latency"] == 0.0  # v1 clamps talking over the user to zero


def test_backchannel_kept_floor_reads_the_session_barge_in():
    user = np.zeros(RATE * 6, np.float32)
    assistant = np.zeros_like(user)
    _place(assistant, 1.0, _tone(3.0))
    user[round(2.0 * RATE) : round(2.3 * RATE)] = _tone(0.3, 0.2)
    lines = [{"text": "yeah", "expect": "continue", "start": 2.0, "end": 2.3}]
    kept = _score(user, assistant, lines, [])["lines"][0]
    assert kept["valid"] and kept["kept_floor"] is True
    barged = [{"event": "state", "t": 2.35, "state": "interrupted", "reason": "user barged in"}]
    assert _score(user, assistant, lines, barged)["lines"][0]["kept_floor"] is False
    # Over silence a backchannel says nothing about the assistant: not scored.
    late = [{"text": "yeah", "expect": "continue", "start": 4.5, "end": 4.8}]
    assert _score(user, assistant, late, [])["lines"][0]["valid"] is False


def test_words_count_what_was_heard_after_a_barge_in():
    events = [_text(1, 1.0, 3), _text(1, 1.1, 4), {"event": "heard", "t": 2.0, "response": 1,
                                                   "text": "only two"}, _text(2, 3.0, 5)]
    assert scoring.words_by_response(events) == {1: (1.0, 2), 2: (3.0, 5)}


# ------------------------------------------------------------------ targets
def _summary(tor: float, latency: float, itor: float, stop: float, underruns: int,
             stop_max: float | None = None, memory: float | None = None) -> dict:
    return {"turn_taking": {"tor": tor, "latency_median": latency},
            "interruption": {"tor": itor, "stop_latency_median": stop,
                             "stop_latency_max": stop if stop_max is None else stop_max},
            "underruns": underruns, "memory_growth_mb": memory}


def test_targets_pass_at_the_limits_and_miss_beyond():
    ok = scoring.targets(_summary(0.95, 0.75, 0.95, 0.15, 0), 0.6)
    assert all(ok.values())
    missed = scoring.targets(_summary(0.9, 0.76, 1.0, 0.151, 1), 0.6)
    assert [k for k, v in missed.items() if v] == [
        "interruption TOR >= 0.95", "stop latency max <= 0.25 s"]
    assert not scoring.targets(_summary(1, 0.7, 1, 0.1, 0, stop_max=0.26), 0.6)[
        "stop latency max <= 0.25 s"]
    assert "memory flat (growth <= 20 MB)" not in ok  # only long runs measure it
    leaky = scoring.targets(_summary(1, 0.7, 1, 0.1, 0, memory=25.0), 0.6)
    assert not leaky["memory flat (growth <= 20 MB)"]


def test_a_figure_that_could_not_be_measured_misses_its_target():
    ok = scoring.targets(_summary(1.0, 0.5, None, None, 0), 0.6)
    assert not ok["interruption TOR >= 0.95"]
    assert not ok["stop latency median <= 0.15 s"]


def test_a_native_duplex_model_is_gated_on_the_flow_not_on_its_own_decisions():
    summary = {**_summary(0.2, 3.0, 0.1, 0.1, 0), "unit_lag_p90": 0.03}
    gated = scoring.targets(summary, 0.6, native_duplex=True, unit_seconds=0.08)
    assert gated == {"stop latency median <= 0.15 s": True, "stop latency max <= 0.25 s": True,
                     "zero underruns": True,
                     "keeps real time: unit lag p90 <= 0.08 s (one unit)": True}
    figures = scoring.model_figures(summary, 0.6)
    assert figures == {"turn-taking TOR >= 0.95": False,
                       "turn-taking latency median <= 0.75 s": False,
                       "interruption TOR >= 0.95": False}
    behind = scoring.targets({**summary, "unit_lag_p90": 0.2, "underruns": 3}, 0.6,
                             native_duplex=True, unit_seconds=0.08)
    assert [k for k, v in behind.items() if not v] == [
        "zero underruns", "keeps real time: unit lag p90 <= 0.08 s (one unit)"]
    # A turn-based backend keeps exactly the targets it had.
    assert scoring.targets(summary, 0.6, unit_seconds=1.0) == scoring.targets(summary, 0.6)


def _state(state: str, t: float, rid: int | None = None) -> dict:
    ev = {"event": "state", "t": t, "state": state}
    if rid is not None:
        ev["response"] = rid
    return ev


def test_an_answers_wait_splits_into_the_detectors_the_backends_and_the_flows_parts():
    # The line ended at 2.0; the turn was decided at 2.35; the answer's first chunk was
    # ready at 2.6 and its first sample reached the speaker at 2.63.
    events = [{"event": "answer_ready", "t": 2.1, "response": 3},  # retracted: never played
              _state("responding", 2.35), {"event": "answer_ready", "t": 2.6, "response": 4},
              _state("speaking", 2.63, rid=4)]
    assert scoring.answer_split(events, 2.0, 9.0) == {
        "detector": 0.35, "backend": 0.25, "flow": 0.03}
    # Prepared during the pause: ready before the decision, the backend's part is zero
    # and the flow's runs from the decision.
    early = [{"event": "answer_ready", "t": 2.2, "response": 5}, _state("responding", 2.3),
             _state("speaking", 2.34, rid=5)]
    assert scoring.answer_split(early, 2.0, 9.0) == {
        "detector": 0.3, "backend": 0.0, "flow": 0.04}
    # The model's verdict ended the turn: its compute is the detector's, in real time.
    judged = [{"event": "turn_judged", "t": 2.3, "complete": True, "seconds": 0.12}, *early]
    assert scoring.answer_split(judged, 2.0, 9.0) == {
        "detector": 0.42, "backend": 0.0, "flow": 0.0}
    # A verdict made off the listener (it says when it was asked) is stamped when it
    # arrived: its compute is already in the decision's time.
    off_listener = [{"event": "turn_judged", "t": 2.3, "complete": True, "seconds": 0.12,
                     "asked": 2.18}, *early]
    assert scoring.answer_split(off_listener, 2.0, 9.0) == {
        "detector": 0.3, "backend": 0.0, "flow": 0.04}
    # An answer that never played, or a decision after the next line began: no split.
    assert scoring.answer_split([_state("responding", 2.3)], 2.0, 9.0) is None
    assert scoring.answer_split(events, 2.0, 2.3) is None


def test_the_flows_and_the_detectors_parts_are_gated_when_measured():
    summary = _summary(1.0, 0.45, 1.0, 0.1, 0)
    summary["turn_taking"].update(split_count=3, detector_part_median=0.44,
                                  flow_part_median=0.061, backend_part_median=0.5)
    verdicts = scoring.targets(summary, 0.35)
    assert verdicts["end of speech -> decision median <= 0.45 s"]
    assert not verdicts["first chunk ready -> first sample median <= 60 ms"]
    summary["turn_taking"]["split_count"] = 0  # nothing measured: native, or no answers
    assert not any("first chunk" in k for k in scoring.targets(summary, 0.35))


# ------------------------------------------------------------------ saved runs
@needs_espeak
def test_a_saved_run_is_rescored_from_disk(tmp_path):
    user = np.zeros(RATE * 6, np.float32)
    assistant = np.zeros_like(user)
    start, end = _place(user, 0.5, _voice("What is the capital of France?"))
    _place(assistant, end + 0.3, _tone(2.0))
    soundfile.write(tmp_path / "conversation.wav", np.stack([user, assistant], 1), RATE)
    soundfile.write(tmp_path / "user.wav", user, RATE)
    events = [_text(1, end + 0.1, 6),
              {"event": "ended", "t": 6.0, "metrics": {"underruns": 2, "dropped_frames": 0}}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    task = {"scenario": "saved", "category": "smooth_turn_taking", "end_of_turn_silence": 0.6,
            "lines": [{"text": "q", "expect": "respond", "start": start, "end": end}]}
    (tmp_path / "task.json").write_text(json.dumps(task))
    score = score_folder(tmp_path)
    assert (tmp_path / "score.json").exists()
    assert score["lines"][0]["latency"] == pytest.approx(0.30, abs=0.001)
    results = summarize([score], {})
    assert results["summary"]["underruns"] == 2
    assert results["targets"]["zero underruns"] is False
    assert not results["passed"]  # no interruption was measured either


def test_memory_growth_counts_only_after_the_first_minute_of_long_runs():
    from app.bench.duplex import memory_growth, peak_growth

    flat = [[float(t), 300.0 + (40.0 if t < 60 else 0.0)] for t in range(0, 600, 5)]
    assert memory_growth(flat) == 0.0
    # 0.1 MB a second: minute medians from 60-120 s (~390) to 540-600 s (~870) of it.
    leak = [[float(t), 300.0 + t / 10] for t in range(0, 600, 5)]
    assert memory_growth(leak) == pytest.approx(48.0, abs=0.6)
    assert peak_growth(leak) == pytest.approx(53.5, abs=0.6)
    assert memory_growth([[float(t), 300.0] for t in range(0, 90, 5)]) is None


def test_a_sample_caught_mid_computation_is_not_growth():
    from app.bench.duplex import memory_growth, peak_growth

    samples = [[float(t), 300.0] for t in range(0, 600, 5)]
    samples[70][1] = 390.0  # one sample while the model held 90 MB of temporaries
    assert memory_growth(samples) == 0.0
    assert peak_growth(samples) == 90.0  # still reported beside it
