"""The far end: what the speaker played, on the session clock, at the rates we need.

The player's reference tap holds every sample it sent to the speaker (silence included)
and the speaker time of the latest block. This module drains it on the session's
listener thread and hands it on as two resampled streams: one at the echo canceller's
rate, one at the recording's rate. Because the tap is continuous, sample m of a stream
lies at anchor + m / rate; the anchor is re-taken whenever the reported time strays from
that by more than `resync_tolerance` (a stalled drain lost audio, or the clocks jumped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.flow.resample import StreamResampler


@dataclass(frozen=True)
class FarEndBlock:
    t: float  # session time of the first sample
    samples: np.ndarray


class _Stream:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._resampler = StreamResampler(in_rate, out_rate)  # equal rates pass through
        self.anchor = 0.0
        self.produced = 0

    def reset(self, anchor: float) -> None:
        self._resampler = StreamResampler(self.in_rate, self.out_rate)
        self.anchor = anchor
        self.produced = 0

    def push(self, samples: np.ndarray) -> FarEndBlock:
        out = self._resampler.process(samples)
        block = FarEndBlock(self.anchor + self.produced / self.out_rate, out)
        self.produced += len(out)
        return block


class FarEnd:
    def __init__(
        self,
        drain: Callable[[], tuple[np.ndarray, float] | None],
        output_rate: int,
        to_session: Callable[[float], float | None],
        *,
        echo_rate: int = 16000,
        record_rate: int = 24000,
        resync_tolerance: float = 0.02,
    ) -> None:
        self._drain = drain
        self._to_session = to_session
        self.output_rate = output_rate
        self._echo = _Stream(output_rate, echo_rate)
        self._record = _Stream(output_rate, record_rate)
        self._tolerance = resync_tolerance
        self._next_t: float | None = None  # session time the next drained sample should have
        self.resyncs = 0

    def poll(self) -> tuple[FarEndBlock, FarEndBlock] | None:
        """(echo-rate block, record-rate block) of what played since the last poll."""
        got = self._drain()
        if got is None:
            return None
        samples, speaker_time = got
        if len(samples) == 0:
            return None
        t = self._to_session(speaker_time)
        if t is None:  # the mic has not started: no session clock to place it on
            return None
        if self._next_t is None or abs(t - self._next_t) > self._tolerance:
            if self._next_t is not None:
                self.resyncs += 1
            self._echo.reset(t)
            self._record.reset(t)
            self._next_t = t
        self._next_t += len(samples) / self.output_rate
        return self._echo.push(samples), self._record.push(samples)
