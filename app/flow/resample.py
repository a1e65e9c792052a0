"""Streaming polyphase resampling from a device's native rate to a backend's rate.

The filter is a linear-phase Kaiser-windowed low-pass designed with scipy.signal, applied
with `scipy.signal.upfirdn` (a polyphase implementation). It is zero-phase aligned the way
`scipy.signal.resample_poly` aligns it: output sample m sits at input position
m * down / up, so the session clock means the same thing at both rates. To stay aligned
the streaming version waits for `lookahead` input samples past each output (under a
millisecond for the usual rates).

State (the last filter-length of input) is carried across `process` calls, so the
concatenated output of any chunking equals `reference_resample` of the whole signal,
the filter's start included (both treat the time before the first sample as silence).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

# Rates a device or backend can plausibly use. Anything outside is a configuration error
# (a zero, a negative, a typo such as 480000), better caught before any audio flows.
MIN_RATE = 4_000
MAX_RATE = 384_000

# The polyphase filter grows with max(up, down); past this the rate pair is exotic
# (e.g. 44101 Hz) and the filter would take megabytes. Every standard pair stays under 500.
MAX_FACTOR = 1_000

# Filter design, relative to the lower of the two Nyquist frequencies: flat (ripple well
# under 0.01 dB) up to PASSBAND, at least STOP_ATTENUATION_DB down from 1.0 on, so that
# nothing above the new Nyquist folds back into the band.
PASSBAND = 0.75
STOP_ATTENUATION_DB = 60.0


def check_rate(rate: object, what: str = "sample rate") -> int:
    """Return `rate` as an int, or raise ValueError saying why it cannot be used."""
    if isinstance(rate, bool) or not isinstance(rate, int | float | np.integer | np.floating):
        raise ValueError(f"{what} must be a number of samples per second, got {rate!r}")
    if not math.isfinite(rate) or rate != int(rate):
        raise ValueError(f"{what} must be a whole number of samples per second, got {rate!r}")
    value = int(rate)
    if value < MIN_RATE or value > MAX_RATE:
        raise ValueError(
            f"{what} of {value} Hz is not supported: use a rate between "
            f"{MIN_RATE} and {MAX_RATE} Hz (devices usually run at 16000, 44100 or 48000)"
        )
    return value


def rate_ratio(in_rate: int, out_rate: int) -> tuple[int, int]:
    """(up, down) in lowest terms for resampling in_rate -> out_rate, both checked."""
    in_rate = check_rate(in_rate, "input sample rate")
    out_rate = check_rate(out_rate, "output sample rate")
    ratio = Fraction(out_rate, in_rate)
    up, down = ratio.numerator, ratio.denominator
    if max(up, down) > MAX_FACTOR:
        raise ValueError(
            f"resampling {in_rate} Hz to {out_rate} Hz needs a {up}/{down} polyphase filter, "
            f"which is too large; use a standard device rate such as 44100 or 48000 Hz"
        )
    return up, down


def design_taps(up: int, down: int) -> np.ndarray:
    """The low-pass prototype (odd length, DC gain 1) at the up-sampled rate in_rate * up."""
    if up == down == 1:
        return np.ones(1)
    edge = 1.0 / max(up, down)  # the lower Nyquist, relative to the up-sampled Nyquist
    width = (1.0 - PASSBAND) * edge
    numtaps, beta = signal.kaiserord(STOP_ATTENUATION_DB, width)
    numtaps |= 1  # odd: a whole-sample centre keeps output m exactly at m * down / up
    cutoff = (1.0 + PASSBAND) / 2.0 * edge
    return signal.firwin(numtaps, cutoff, window=("kaiser", beta))


def reference_resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot resampling with the same filter, for checking the streaming version."""
    up, down = rate_ratio(in_rate, out_rate)
    x = np.asarray(x, dtype=np.float32)
    if up == down == 1:
        return x.copy()
    return signal.resample_poly(x, up, down, window=design_taps(up, down)).astype(np.float32)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class StreamResampler:
    """Resamples a stream chunk by chunk with state carried across chunks.

    Output sample m is y[m] = sum_j x[j] * g[c + m*down - j*up], with g the up-scaled taps
    and c their centre; x before the first sample is zero. `process(chunk)` returns every
    output whose inputs have all arrived; `flush()` treats the future as silence and
    returns the rest, up to ceil(n_in * up / down) outputs in all.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = check_rate(in_rate, "input sample rate")
        self.out_rate = check_rate(out_rate, "output sample rate")
        self.up, self.down = rate_ratio(self.in_rate, self.out_rate)
        self.identity = self.up == self.down == 1
        self.taps = design_taps(self.up, self.down)
        self._g = (self.taps * self.up).astype(np.float32)
        self._g_reversed = np.ascontiguousarray(self._g[::-1])
        self._c = (len(self.taps) - 1) // 2
        # Input needed past an output's own position before it can be computed.
        self.lookahead = self._c // self.up
        # upfirdn lines its output up with the chunk it is given only when the chunk starts
        # at an index s with (c - s*up) % down == 0; keep the buffered chunk on that grid.
        self._phase = (self._c * pow(self.up, -1, self.down)) % self.down
        self.consumed = 0  # input samples received
        self.produced = 0  # output samples returned
        self._flushed = False
        self._buf_start = self._aligned_at_or_below(self._first_input(0))
        # Indices below zero are silence: start the buffer with them.
        self._buf = np.zeros(-self._buf_start, dtype=np.float32)

    # --- index arithmetic -------------------------------------------------------------

    def _first_input(self, m: int) -> int:
        """Lowest input index output m reads."""
        return _ceil_div(self._c + m * self.down - (len(self._g) - 1), self.up)

    def _aligned_at_or_below(self, index: int) -> int:
        return index - ((index - self._phase) % self.down)

    def input_needed(self, n_out: int) -> int:
        """How many input samples must have arrived to compute outputs 0 .. n_out-1."""
        if n_out <= 0:
            return 0
        return (self._c + (n_out - 1) * self.down) // self.up + 1

    def outputs_ready(self, n_in: int) -> int:
        """How many outputs can be computed from n_in input samples."""
        top = n_in * self.up - 1 - self._c
        return top // self.down + 1 if top >= 0 else 0

    def owed(self) -> int:
        """Outputs not yet returned that the input received so far still reaches (its last
        sample reaches half the filter past its own place): how far past what was
        returned the stream's sound so far goes."""
        if self.consumed == 0 or self.identity:
            return 0
        last = (self._c + (self.consumed - 1) * self.up) // self.down
        return max(0, last + 1 - self.produced)

    # --- streaming ----------------------------------------------------------------------

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Take the next input samples; return the outputs they complete (float32)."""
        if self._flushed:
            raise RuntimeError("this resampler was flushed; start a new one for a new stream")
        return self._run(chunk)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self.consumed += len(chunk)
        if self.identity:
            self.produced += len(chunk)
            return chunk.copy()
        buf = np.concatenate((self._buf, chunk)) if len(self._buf) else chunk
        m0, m1 = self.produced, self.outputs_ready(self.consumed)
        if m1 <= m0:
            self._buf = buf if buf is not chunk else chunk.copy()
            return np.zeros(0, dtype=np.float32)
        if self.up == 1:
            out = self._decimate(buf, m0, m1)
        else:
            # Only the inputs outputs m0..m1-1 read; the buffer starts on upfirdn's grid.
            last = (self._c + (m1 - 1) * self.down) // self.up
            seg = buf[: last + 1 - self._buf_start]
            y = signal.upfirdn(self._g, seg, self.up, self.down)
            first = (self._c + m0 * self.down - self._buf_start * self.up) // self.down
            out = np.asarray(y[first : first + (m1 - m0)], dtype=np.float32)
        self.produced = m1
        # Keep what later outputs still read, trimmed on the grid.
        keep_from = self._aligned_at_or_below(self._first_input(m1))
        self._buf = buf[keep_from - self._buf_start :].copy()
        self._buf_start = keep_from
        return out

    def _decimate(self, buf: np.ndarray, m0: int, m1: int) -> np.ndarray:
        """Integer down-sampling (up == 1), the common case (48 kHz to 16 or 24 kHz).

        Output m is the dot product of the taps with the input window starting at
        c + m*down - (L-1): a strided view of the buffer, summed by einsum's contiguous
        inner loop, which measured 2-3 times faster here than upfirdn for these sizes.
        """
        taps = len(self._g)
        first = self._c + m0 * self.down - (taps - 1) - self._buf_start
        windows = sliding_window_view(buf[first:], taps)[:: self.down][: m1 - m0]
        return np.einsum("ij,j->i", windows, self._g_reversed)

    def flush(self) -> np.ndarray:
        """End the stream: the outputs still owed, treating what follows as silence.

        Together with everything `process` returned this is ceil(n_in * up / down)
        samples, as `reference_resample` gives. The resampler takes no input afterwards.
        """
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        total = _ceil_div(self.consumed * self.up, self.down)
        if self.identity or total <= self.produced:
            return np.zeros(0, dtype=np.float32)
        start = self.produced
        pad = self.input_needed(total) - self.consumed
        out = self._run(np.zeros(pad, dtype=np.float32))
        return out[: total - start]
