"""The streaming resampler: equal to one-shot resampling, keeps tones, rejects aliases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from app.flow.resample import (
    StreamResampler,
    check_rate,
    design_taps,
    rate_ratio,
    reference_resample,
)
from tests.helpers_timeline import noise, peak_frequency, rms_db, sine

PAIRS = [(48000, 16000), (44100, 16000), (48000, 24000), (44100, 24000), (8000, 16000),
         (22050, 16000), (96000, 24000), (16000, 16000)]


def stream(rs: StreamResampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(rs.process(x[i : i + n]))
        i += n
        k += 1
    out.append(rs.flush())
    return np.concatenate(out)


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    n=st.integers(0, 6000),
    sizes=st.lists(st.integers(1, 2500), min_size=1, max_size=12),
)
def test_streaming_equals_one_shot_for_any_chunking(pair, n, sizes):
    in_rate, out_rate = pair
    x = noise(n, seed=n)
    y = stream(StreamResampler(in_rate, out_rate), x, sizes)
    ref = reference_resample(x, in_rate, out_rate)
    assert len(y) == len(ref) == -(-n * out_rate // in_rate)
    np.testing.assert_allclose(y, ref, atol=2e-6, rtol=0)


def test_reference_is_scipy_resample_poly_with_these_taps():
    x = noise(4410, seed=3)
    up, down = rate_ratio(44100, 16000)
    direct = signal.resample_poly(x.astype(np.float64), up, down, window=design_taps(up, down))
    np.testing.assert_allclose(reference_resample(x, 44100, 16000), direct, atol=1e-6)


def test_outputs_appear_as_soon_as_their_inputs_are_there():
    rs = StreamResampler(48000, 16000)
    # Output m needs input up to m*3 + lookahead; feeding one sample at a time must release
    # each output exactly when that input arrives, never before.
    x = noise(600, seed=1)
    released = []
    for i in range(len(x)):
        released.append(len(rs.process(x[i : i + 1])))
    total = np.cumsum(released)
    for n_in in range(1, len(x) + 1):
        assert total[n_in - 1] == rs.outputs_ready(n_in)
        assert rs.input_needed(rs.outputs_ready(n_in)) <= n_in
        assert rs.input_needed(rs.outputs_ready(n_in) + 1) > n_in
    assert rs.lookahead < 48  # under a millisecond at 48 kHz


@pytest.mark.parametrize("in_rate", [44100, 48000])
@pytest.mark.parametrize("out_rate", [16000, 24000])
@pytest.mark.parametrize("freq", [200.0, 1000.0, 3150.0, 5000.0])
def test_tone_keeps_frequency_and_level(in_rate, out_rate, freq):
    x = sine(freq, in_rate, 1.0)
    block = in_rate // 100
    y = stream(StreamResampler(in_rate, out_rate), x, [block])
    edge = out_rate // 10  # the filter's start and end are not steady state
    steady = y[edge:-edge]
    resolution = out_rate / len(steady)
    assert abs(peak_frequency(steady, out_rate) - freq) < resolution / 4
    assert abs(rms_db(steady) - rms_db(x)) < 0.5
    # Nothing else either, and no time shift: the output is the tone sampled at the new rate.
    residual = steady - sine(freq, out_rate, 1.0)[edge:-edge]
    assert rms_db(residual) - rms_db(x) < -40


@pytest.mark.parametrize("in_rate", [44100, 48000])
@pytest.mark.parametrize("out_rate", [16000, 24000])
@pytest.mark.parametrize("above_nyquist", [1.03, 1.25, 1.6])
def test_tone_above_new_nyquist_is_not_aliased_into_the_band(in_rate, out_rate, above_nyquist):
    freq = above_nyquist * out_rate / 2
    x = sine(freq, in_rate, 1.0)
    y = stream(StreamResampler(in_rate, out_rate), x, [in_rate // 100])
    edge = out_rate // 10
    assert rms_db(y[edge:-edge]) - rms_db(x) <= -40


def test_upsampling_does_not_leave_images():
    # 8 kHz -> 16 kHz: a 3 kHz tone must not come with its 5 kHz image.
    x = sine(3000.0, 8000, 1.0)
    y = stream(StreamResampler(8000, 16000), x, [80])[1600:-1600]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    tone = spectrum[np.abs(freqs - 3000) < 50].max()
    image = spectrum[np.abs(freqs - 5000) < 50].max()
    assert 20 * np.log10(image / tone) < -50


def test_same_rate_passes_samples_through_untouched():
    x = noise(1000, seed=5)
    rs = StreamResampler(16000, 16000)
    assert rs.identity and rs.lookahead == 0
    np.testing.assert_array_equal(stream(rs, x, [7, 300]), x)


def test_flush_ends_the_stream():
    rs = StreamResampler(48000, 16000)
    rs.process(noise(100))
    rs.flush()
    assert len(rs.flush()) == 0
    with pytest.raises(RuntimeError, match="flushed"):
        rs.process(noise(10))


@pytest.mark.parametrize(
    "rate, message",
    [(0, "not supported"), (-16000, "not supported"), (10**9, "not supported"),
     (float("nan"), "whole number"), (16000.5, "whole number"), ("48000", "a number"),
     (True, "a number"), (None, "a number"), (3999, "not supported")],
)
def test_unusable_rates_are_rejected_with_a_clear_message(rate, message):
    with pytest.raises(ValueError, match=message):
        check_rate(rate)
    with pytest.raises(ValueError, match=message):
        StreamResampler(rate, 16000)


def test_exotic_rate_pair_is_rejected_not_built():
    with pytest.raises(ValueError, match="too large"):
        StreamResampler(44101, 16000)


def test_integral_float_and_numpy_rates_are_accepted():
    assert check_rate(48000.0) == 48000
    assert check_rate(np.int64(44100)) == 44100
