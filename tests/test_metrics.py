"""Metrics pair moments into latencies and summarise them."""

from __future__ import annotations

import pytest

from app.flow.metrics import SessionMetrics, Summary


def test_turn_taking_and_interruption_latencies_are_paired_in_order():
    m = SessionMetrics()
    m.user_turn_ended(2.0)
    assert m.first_audio_out(2.75) == ("turn_taking", pytest.approx(0.75))
    assert m.first_audio_out(3.0) is None  # no open turn: not counted twice
    m.barge_in_started(5.0)
    assert m.awaiting_silence
    assert m.output_silent(5.08) == pytest.approx(0.08)
    m.user_turn_ended(6.0, after_interruption=True)
    assert m.first_audio_out(6.5) == ("response_after_interruption", pytest.approx(0.5))
    summary = m.summary()
    assert summary["turn_taking_latency"]["count"] == 1
    assert summary["stop_latency"]["median"] == pytest.approx(0.08)
    assert summary["response_latency_after_interruption"]["median"] == pytest.approx(0.5)


def test_summary_median_and_p90():
    s = Summary.of([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert s.median == pytest.approx(0.55)
    assert s.p90 == pytest.approx(0.9)
    assert Summary.of([]) == Summary(0, None, None)


def test_real_time_factor_is_compute_per_second_of_speech():
    m = SessionMetrics()
    assert m.real_time_factor is None
    m.speech_generated(audio_seconds=2.0, compute_seconds=0.5)
    m.speech_generated(audio_seconds=2.0, compute_seconds=1.5)
    assert m.real_time_factor == pytest.approx(0.5)
