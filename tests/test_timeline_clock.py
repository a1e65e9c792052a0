"""Gaps, drift and overflow: the session clock and the audio buffer's limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.flow.clock import SampleClock
from app.flow.ring import AudioRing
from app.flow.spans import SpanSet
from app.flow.timeline import Timeline
from tests.helpers_timeline import check_contiguous, noise

OUT = 16000


# --- gaps -----------------------------------------------------------------------------


def test_a_gap_is_filled_with_silence_where_it_happened_and_flagged():
    tl = Timeline(0.25, OUT)
    x = noise(1600, seed=1)
    tl.push_audio(x, OUT, 10.0)  # 0.0-0.1 s
    tl.push_audio(x, OUT, 10.2)  # captured 100 ms later than its sample count says
    tl.push_audio(noise(2400, seed=2), OUT, 10.3)
    unit = tl.next_unit()
    assert unit.gap_samples == 1600
    np.testing.assert_array_equal(unit.audio[:1600], x)
    assert not unit.audio[1600:3200].any()
    np.testing.assert_array_equal(unit.audio[3200:], x[:800])
    stats = tl.stats()
    assert stats.gaps == 1 and stats.gap_seconds == pytest.approx(0.1)
    assert stats.gap_samples == 1600


def test_lateness_within_tolerance_is_jitter_not_a_gap():
    tl = Timeline(0.25, OUT, gap_tolerance=0.04)
    tl.push_audio(noise(1600), OUT, 10.0)
    tl.push_audio(noise(1600), OUT, 10.13)  # 30 ms late
    tl.push_audio(noise(800), OUT, 10.2)
    assert tl.next_unit().gap_samples == 0
    assert tl.stats().gaps == 0


def test_a_gap_with_resampling_is_counted_at_the_consumer_rate():
    native = 48000
    tl = Timeline(1.0, OUT, native_rate=native)
    tl.push_audio(noise(native // 2, seed=3), native, 0.0)
    tl.push_audio(noise(native, seed=4), native, 0.7)  # 0.5-0.7 s missing
    unit = tl.next_unit()
    assert unit.gap_samples == round(0.2 * OUT)
    inside = unit.audio[8000 + 100 : 11200 - 100]  # away from the filter's reach
    assert np.max(np.abs(inside)) < 1e-6
    assert tl.next_unit() is None  # unit 1 has 0.7 s of its audio only


def test_a_gap_spanning_units_is_split_between_them():
    tl = Timeline(0.08, OUT)
    tl.push_audio(noise(1000), OUT, 0.0)
    tl.push_audio(noise(2000), OUT, 0.2)  # samples 1000-3200 missing
    units = [tl.next_unit() for _ in range(3)]
    assert [u.gap_samples for u in units] == [280, 1280, 640]
    check_contiguous(units, 0.08, OUT)


def test_drift_of_100_ppm_over_an_hour_makes_no_fake_gap():
    rng = np.random.default_rng(5)
    block = np.zeros(1600, np.float32)  # 0.1 s blocks keep an hour quick to simulate
    for ppm in (+100, -100):
        tl = Timeline(1.0, OUT)
        scale = 1 + ppm * 1e-6  # capture seconds per sample-clock second
        n_blocks = 36_000
        jitter = rng.uniform(-0.003, 0.003, n_blocks)
        units = 0
        for i in range(n_blocks):
            tl.push_audio(block, OUT, 7.0 + i * 0.1 * scale + jitter[i])
            if tl.next_unit() is not None:
                units += 1
        # Without drift tracking the last block would look 0.36 s late (or early).
        assert abs(n_blocks * 0.1 * (scale - 1)) > 5 * tl.gap_tolerance
        stats = tl.stats()
        assert (stats.gaps, stats.clock_resyncs, stats.gap_samples) == (0, 0, 0)
        assert units == 3600
        # A frame captured with the last block lands on that block's session time.
        last = 7.0 + (n_blocks - 1) * 0.1 * scale
        assert tl.session_time(last) == pytest.approx((n_blocks - 1) * 0.1, abs=0.002)
        # And a real gap after the hour is still found, at its true length.
        tl.push_audio(block, OUT, 7.0 + (n_blocks + 2) * 0.1 * scale)
        assert tl.stats().gaps == 1
        assert tl.stats().gap_seconds == pytest.approx(0.2, abs=0.005)


def test_clock_reports_steady_sample_loss_as_gaps():
    # A driver that loses 1 % of samples is not drift: the tracker's speed is capped, so
    # the shortfall builds up past the tolerance instead of being absorbed.
    clock = SampleClock(16000, gap_tolerance=0.04)
    pos = 0
    gaps = 0
    for i in range(3000):
        inserted = clock.observe(i * 0.0101, pos, 160)
        pos += inserted + 160
        gaps += inserted > 0
    assert gaps >= 5


def test_clock_resyncs_when_samples_run_ahead_of_time():
    clock = SampleClock(16000, gap_tolerance=0.04)
    clock.observe(1.0, 0, 160)
    assert clock.observe(1.0, 16000, 160) == 0  # a second of samples in no time
    assert clock.resyncs == 1
    assert clock.to_session(1.0) == pytest.approx(1.0)


def test_a_jump_longer_than_the_buffer_re_anchors_instead_of_filling():
    # Suspend and resume: an hour of silent units would only bury the conversation.
    tl = Timeline(0.08, OUT, audio_capacity_seconds=5.0)
    tl.push_audio(noise(1280), OUT, 10.0)
    tl.push_audio(noise(1280), OUT, 3610.0)
    stats = tl.stats()
    assert (stats.gaps, stats.clock_resyncs, stats.overflows) == (0, 1, 0)
    assert [tl.next_unit().gap_samples for _ in range(2)] == [0, 0]
    assert tl.session_time(3610.0) == pytest.approx(0.08)
    tl.push_audio(noise(160), OUT, 3610.0 + 4.0)  # a long gap, but within the buffer
    assert tl.stats().gaps == 1


def test_untimed_audio_never_makes_a_gap():
    tl = Timeline(0.08, OUT)
    for _ in range(5):
        tl.push_audio(noise(640), OUT, None)
    assert [tl.next_unit().gap_samples for _ in range(2)] == [0, 0]
    assert tl.session_time(3.0) is None


# --- overflow -------------------------------------------------------------------------


def test_overflow_is_reported_when_capacity_is_exceeded_and_never_before():
    events = []
    tl = Timeline(0.25, OUT, audio_capacity_seconds=1.0, on_overflow=events.append)
    x = noise(OUT + 1, seed=9)
    for i in range(0, OUT, 1000):
        tl.push_audio(x[i : i + 1000], OUT)
    assert tl.stats().overflows == 0 and events == []  # exactly full: fine
    tl.push_audio(x[OUT:], OUT)  # one sample more than it can hold
    stats = tl.stats()
    assert stats.overflows == 1 and stats.overflow_seconds == pytest.approx(1 / OUT)
    # Recorded by the producer (the audio callback), passed on only by the consumer.
    assert events == [] and len(tl.overflow_events()) == 1
    first = tl.next_unit()
    assert len(events) == 1 and tl.overflow_events() == events
    event = events[0]
    assert (event.lost_samples, event.lost_from, event.capacity_seconds) == (1, 0.0, 1.0)
    assert "too slow" in event.describe()
    # Units stay contiguous; the dropped sample comes out as flagged silence.
    units = [first] + [tl.next_unit() for _ in range(3)]
    check_contiguous(units, 0.25, OUT)
    assert units[0].gap_samples == 1 and units[0].audio[0] == 0.0
    np.testing.assert_array_equal(np.concatenate([u.audio for u in units])[1:], x[1:OUT])


@settings(max_examples=60, deadline=None)
@given(
    script=st.lists(
        st.one_of(st.tuples(st.just("push"), st.integers(1, 9000)),
                  st.tuples(st.just("cut"), st.integers(1, 4))),
        max_size=30,
    )
)
def test_overflow_matches_a_model_of_the_buffer(script):
    capacity_s, unit = 0.5, 1280  # 0.08 s units, capacity 8000 samples
    capacity = round(capacity_s * OUT)
    tl = Timeline(0.08, OUT, audio_capacity_seconds=capacity_s)
    written = read = cut = lost = overflows = 0
    pushed = []
    units = []
    for kind, value in script:
        if kind == "push":
            x = noise(value, seed=written)
            tl.push_audio(x, OUT)
            pushed.append(x)
            written += value
            if written - read > capacity:
                overflows += 1
                lost += written - capacity - read
                read = written - capacity
        else:
            for _ in range(value):
                u = tl.next_unit()
                if (cut + 1) * unit > written:
                    assert u is None
                    break
                units.append(u)
                cut += 1
                read = max(read, cut * unit)
        stats = tl.stats()
        assert stats.overflows == overflows
        assert stats.overflow_seconds == pytest.approx(lost / OUT)
        assert stats.buffered_seconds <= capacity_s
    x = np.concatenate(pushed) if pushed else np.zeros(0, np.float32)
    y = np.concatenate([u.audio for u in units]) if units else np.zeros(0, np.float32)
    kept = y != 0  # what was not dropped is exactly what was pushed
    np.testing.assert_array_equal(y[kept], x[: len(y)][kept])
    assert sum(u.gap_samples for u in units) >= int(np.count_nonzero(~kept))


# --- the parts --------------------------------------------------------------------------


def test_ring_wraps_and_reports_what_it_dropped():
    ring = AudioRing(10)
    assert ring.write(np.arange(8, dtype=np.float32)) is None
    ring.consume_to(6)
    # It wraps, and exactly full is no overflow.
    assert ring.write(np.arange(8, 16, dtype=np.float32)) is None
    np.testing.assert_array_equal(ring.read(6, 16), np.arange(6, 16))
    assert ring.write(np.array([16.0], np.float32), zeros_before=3) == (6, 10)
    np.testing.assert_array_equal(ring.read(10, 20), [10, 11, 12, 13, 14, 15, 0, 0, 0, 16])
    with pytest.raises(IndexError):
        ring.read(5, 8)
    # A block longer than the ring keeps its newest samples only.
    assert ring.write(np.arange(100, 125, dtype=np.float32)) == (10, 35)
    np.testing.assert_array_equal(ring.read(35, 45), np.arange(115, 125))


def test_span_set_merges_and_counts_mapped_samples():
    spans = SpanSet()
    spans.add(10, 20)
    spans.add(30, 40)
    spans.add(18, 31)  # bridges both
    assert spans.spans() == [(10, 40)]
    spans.add(50, 50)  # empty: ignored
    spans.add(60, 66)
    # 48 kHz -> 16 kHz (up 1, down 3): output m sits at input 3m.
    assert spans.count_mapped(0, 100, 1, 3) == (14 - 4) + (22 - 20)
    spans.drop_before(40)
    assert spans.spans() == [(60, 66)]
