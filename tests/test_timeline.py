"""The timeline's unit cutter: contiguous, whole, lossless units, from any interleaving."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.capture.sinks import AudioSink, FrameSink
from app.flow.resample import reference_resample
from app.flow.timeline import Timeline
from tests.helpers_timeline import check_contiguous, frame, noise

OUT = 16000
T0 = 1000.0  # capture clock at the first sample: anything, the timeline learns it

ops = st.lists(
    st.one_of(
        st.tuples(st.just("audio"), st.integers(1, 4000)),
        st.tuples(st.just("frame"), st.integers(-200, 3000)),  # capture time, ms
        st.tuples(st.just("cut"), st.integers(1, 3)),
    ),
    max_size=40,
)


def expected_frames(
    start: float, duration: float, n: int, pushed: list[float]
) -> list[int]:
    """Brute force: for each slot, the newest frame (by time, then arrival) at or before it."""
    seqs = []
    for i in range(n):
        target = start + (i + 1) * duration / n
        candidates = [(t, seq) for seq, t in enumerate(pushed) if t <= target]
        if candidates:
            seqs.append(max(candidates)[1])
    return seqs


@settings(max_examples=60, deadline=None)
@given(
    native=st.sampled_from([16000, 48000, 44100]),
    unit_s=st.sampled_from([0.08, 0.25]),
    per_unit=st.sampled_from([0, 1, 3]),
    timed=st.booleans(),
    script=ops,
)
def test_units_are_contiguous_whole_and_lossless(native, unit_s, per_unit, timed, script):
    tl = Timeline(unit_s, OUT, frames_per_unit=per_unit, audio_capacity_seconds=30.0,
                  frame_capacity=10_000)
    pushed_audio: list[np.ndarray] = []
    pos = 0
    frame_times: list[float] = []  # session time of each pushed frame, by seq
    units = []

    def take(unit):
        if timed and per_unit:
            want = expected_frames(unit.start, unit_s, per_unit, frame_times)
            assert [f.seq for f in unit.frames] == want
            for f in unit.frames:
                assert f.t == pytest.approx(frame_times[f.seq], abs=1e-9)
                assert f.pixels[0, 0, 0] == f.seq % 256
        else:
            assert unit.frames == ()
        units.append(unit)

    for kind, value in script:
        if kind == "audio":
            x = noise(value, seed=pos)
            tl.push_audio(x, native, T0 + pos / native if timed else None)
            pushed_audio.append(x)
            pos += value
        elif kind == "frame":
            t = value / 1000 + 0.0005  # never on a slot boundary
            tl.push_frame(frame(len(frame_times)), T0 + t)
            frame_times.append(t)
        else:
            for _ in range(value):
                unit = tl.next_unit()
                if unit is None:
                    break
                take(unit)
    for unit in tl.flush():
        take(unit)

    size = round(unit_s * OUT)
    check_contiguous(units, unit_s, OUT)
    x = np.concatenate(pushed_audio) if pushed_audio else np.zeros(0, np.float32)
    real_out = -(-len(x) * OUT // native)
    assert len(units) == -(-real_out // size)
    y = np.concatenate([u.audio for u in units]) if units else np.zeros(0, np.float32)
    if native == OUT:
        np.testing.assert_array_equal(y[: len(x)], x)  # sample for sample
        assert not y[len(x) :].any()
    else:
        np.testing.assert_allclose(y[:real_out], reference_resample(x, native, OUT), atol=2e-6)
    # Only the end-of-stream padding is filled silence, and it is counted.
    assert sum(u.gap_samples for u in units) == len(y) - real_out
    assert all(u.gap_samples == 0 for u in units[:-1])
    stats = tl.stats()
    assert stats.units_cut == len(units)
    assert stats.overflows == 0 and stats.gaps == 0
    assert stats.frames_pushed == len(frame_times)
    assert stats.frames_pushed == (stats.frames_delivered + stats.frames_skipped
                                   + stats.frames_dropped + stats.frames_pending)


def test_timeline_is_the_capture_sink():
    tl = Timeline(0.08, OUT)
    sink_audio: AudioSink = tl
    sink_frames: FrameSink = tl
    sink_audio.push_audio(noise(1280), OUT, 5.0)
    sink_frames.push_frame(frame(1), 5.01)
    unit = tl.next_unit()
    assert unit is not None and len(unit.frames) == 1 and unit.frames[0].t == pytest.approx(0.01)


def test_next_unit_waits_for_the_resamplers_lookahead():
    tl = Timeline(0.08, OUT, native_rate=48000)
    block = noise(3840)  # exactly 80 ms at 48 kHz
    tl.push_audio(block, 48000, 0.0)
    assert tl.next_unit() is None  # the last output still needs a few future samples
    tl.push_audio(noise(480, seed=1), 48000, 0.08)
    unit = tl.next_unit()
    assert unit is not None and unit.index == 0
    assert tl.next_unit() is None


def test_consumer_on_another_thread_gets_every_unit():
    native, unit_s, block = 48000, 0.25, 480
    x = noise(native * 3, seed=11)
    tl = Timeline(unit_s, OUT, native_rate=native)

    def produce():
        for i in range(0, len(x), block):
            tl.push_audio(x[i : i + block], native, i / native)
            if i % (block * 10) == 0:
                time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    units = []
    while len(units) < 11:
        unit = tl.wait_unit(timeout=5.0)
        assert unit is not None, "the consumer starved although audio kept coming"
        units.append(unit)
    producer.join()
    units += tl.flush()
    check_contiguous(units, unit_s, OUT)
    y = np.concatenate([u.audio for u in units])
    np.testing.assert_allclose(y, reference_resample(x, native, OUT), atol=2e-6)


def test_wait_unit_times_out_without_audio():
    tl = Timeline(0.08, OUT)
    began = time.monotonic()
    assert tl.wait_unit(timeout=0.05) is None
    assert 0.04 <= time.monotonic() - began < 2.0
    assert tl.wait_unit(timeout=0) is None


def test_wait_unit_wakes_when_audio_arrives():
    tl = Timeline(0.08, OUT)
    timer = threading.Timer(0.05, lambda: tl.push_audio(noise(1280), OUT, 0.0))
    timer.start()
    began = time.monotonic()
    unit = tl.wait_unit(timeout=5.0)
    timer.join()
    assert unit is not None and unit.index == 0
    assert time.monotonic() - began < 2.0


def test_close_wakes_a_waiting_consumer():
    tl = Timeline(0.08, OUT, native_rate=OUT)
    got = []
    waiter = threading.Thread(target=lambda: got.append(tl.wait_unit(timeout=None)))
    waiter.start()
    time.sleep(0.05)
    tl.close()
    waiter.join(timeout=2.0)
    assert not waiter.is_alive() and got == [None]


def test_flush_pads_the_last_unit_and_ignores_later_pushes():
    tl = Timeline(0.08, OUT)
    x = noise(1280 + 300, seed=2)
    tl.push_audio(x, OUT, 0.0)
    units = tl.flush()
    assert [u.index for u in units] == [0, 1]
    assert units[1].gap_samples == 1280 - 300
    np.testing.assert_array_equal(units[1].audio[:300], x[1280:])
    assert not units[1].audio[300:].any()
    tl.push_audio(noise(100), OUT, 0.1)
    assert tl.stats().pushes_after_close == 1
    assert tl.next_unit() is None and tl.flush() == []


def test_flush_without_audio_or_partial_unit_gives_nothing_extra():
    assert Timeline(0.08, OUT).flush() == []
    tl = Timeline(0.08, OUT)
    tl.push_audio(noise(1280), OUT, 0.0)
    units = tl.flush()
    assert len(units) == 1 and units[0].gap_samples == 0


def test_mono_column_and_float64_audio_are_accepted():
    tl = Timeline(0.08, OUT)
    x = noise(1280)
    tl.push_audio(x[:640].reshape(-1, 1), OUT)  # sounddevice's (frames, 1)
    tl.push_audio(x[640:].astype(np.float64), OUT, np.float64(0.04))
    np.testing.assert_array_equal(tl.next_unit().audio, x)


@pytest.mark.parametrize(
    "samples, rate, when, message",
    [
        ([0.0, 0.1], OUT, 0.0, "numpy array"),
        (np.zeros(10, np.int16), OUT, 0.0, "floating-point"),
        (np.zeros((10, 2), np.float32), OUT, 0.0, "mono"),
        (np.zeros(10, np.float32), 0, 0.0, "not supported"),
        (np.zeros(10, np.float32), 10**9, 0.0, "not supported"),
        (np.zeros(10, np.float32), None, 0.0, "a number"),
        (np.zeros(10, np.float32), OUT, float("nan"), "finite"),
        (np.zeros(10, np.float32), OUT, "soon", "finite"),
    ],
)
def test_bad_audio_gets_a_clear_error(samples, rate, when, message):
    tl = Timeline(0.08, OUT)
    with pytest.raises(ValueError, match=message):
        tl.push_audio(samples, rate, when)


def test_a_second_microphone_rate_is_refused():
    tl = Timeline(0.08, OUT)
    tl.push_audio(noise(10), 48000, 0.0)
    with pytest.raises(ValueError, match="44100 Hz but this timeline runs at 48000 Hz"):
        tl.push_audio(noise(10), 44100, 0.01)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"unit_seconds": 0}, "unit length"),
        ({"unit_seconds": float("nan")}, "unit length"),
        ({"unit_seconds": 0.0333}, "whole number of samples"),
        ({"out_rate": 0}, "not supported"),
        ({"out_rate": 16000.5}, "whole number"),
        ({"native_rate": -1}, "not supported"),
        ({"native_rate": 44101}, "too large"),
        ({"audio_capacity_seconds": 0.5}, "cannot hold a unit"),
        ({"frames_per_unit": -1}, "frames per unit"),
        ({"frames_per_unit": 2, "frame_capacity": 1}, "frame capacity"),
        ({"gap_tolerance": 0}, "gap tolerance"),
        ({"frame_max_age": -1.0}, "frame age"),
    ],
)
def test_bad_configuration_gets_a_clear_error(kwargs, message):
    args = {"unit_seconds": 1.0, "out_rate": OUT} | kwargs
    with pytest.raises(ValueError, match=message):
        Timeline(args.pop("unit_seconds"), args.pop("out_rate"), **args)


def test_flush_returns_a_sliver_after_a_unit_that_only_lacked_lookahead():
    """Found by the property test: 3841 samples at 48 kHz are 1281 at 16 kHz, two units;
    the first lacks only the resampler's lookahead, the second holds one real sample."""
    tl = Timeline(0.08, OUT, frames_per_unit=0, audio_capacity_seconds=30.0)
    tl.push_audio(noise(3841, seed=1), 48000, None)
    units = tl.flush()
    assert [u.index for u in units] == [0, 1]
    assert units[1].gap_samples == 1279
