"""The session clock: the microphone's sample count, and where capture times fall on it.

Session time of mic sample n is n / rate. Capture times come from another clock
(`time.monotonic()`, or a file source's virtual axis); the mapping between the two is an
offset (capture_time - session_time) learned from the first audio block and then tracked,
because a sound card's crystal and the monotonic clock disagree by up to ~100 ppm: over an
hour that is 0.36 s, which a fixed offset would mistake for a gap.

The tracker follows slowly (a first-order filter with time constant `time_constant`) and
its speed is capped at `max_drift` (seconds per second), well above any real crystal, so
that jitter in capture times is averaged away while a steady loss of samples (a driver
dropping blocks) still builds up past the tolerance and is reported as a gap.
"""

from __future__ import annotations

import math


class SampleClock:
    """Tracks capture time -> session time for one audio stream and finds gaps in it."""

    __slots__ = (
        "_alpha_per_s",
        "gap_tolerance",
        "gaps",
        "max_drift",
        "max_gap",
        "offset",
        "rate",
        "resyncs",
    )

    def __init__(
        self,
        rate: int,
        gap_tolerance: float = 0.04,
        time_constant: float = 5.0,
        max_drift: float = 1e-3,
        max_gap: float = 60.0,
    ) -> None:
        if not (math.isfinite(gap_tolerance) and gap_tolerance > 0):
            raise ValueError(f"gap tolerance must be a positive number of seconds, "
                             f"got {gap_tolerance!r}")
        if not (math.isfinite(time_constant) and time_constant > 0):
            raise ValueError(f"time constant must be positive, got {time_constant!r}")
        self.rate = rate
        self.gap_tolerance = gap_tolerance
        self.max_drift = max_drift
        # A jump longer than this is a clock discontinuity (suspend and resume, a source
        # restarted on another axis), not lost audio: re-anchor instead of making the
        # consumer chew through minutes of silent units.
        self.max_gap = max(max_gap, gap_tolerance)
        self._alpha_per_s = 1.0 / time_constant
        self.offset: float | None = None  # capture_time - session_time; None until anchored
        self.gaps = 0  # gaps found
        self.resyncs = 0  # times the offset was re-anchored (samples early, or a huge jump)

    def to_session(self, capture_time: float) -> float | None:
        """Session time of a capture time, or None before the first timed audio block."""
        off = self.offset
        return None if off is None else capture_time - off

    def to_capture(self, session_time: float) -> float | None:
        off = self.offset
        return None if off is None else session_time + off

    def observe(self, capture_time: float, sample_index: int, n_samples: int) -> int:
        """A block of `n_samples` whose first sample, number `sample_index`, was captured at
        `capture_time`. Returns how many samples of silence go before it (0: no gap)."""
        t_samples = sample_index / self.rate
        off = self.offset
        if off is None:
            self.offset = capture_time - t_samples
            return 0
        late = capture_time - off - t_samples  # > 0: the capture clock is ahead of the samples
        if late > self.max_gap:
            self.resyncs += 1
            self.offset = capture_time - t_samples
            return 0
        if late > self.gap_tolerance:
            # Samples are missing. Fill the whole difference so the block lands where it was
            # captured; the offset stays, since it was right before the gap.
            self.gaps += 1
            return round(late * self.rate)
        if late < -self.gap_tolerance:
            # More samples than time: the capture clock stepped back or the source
            # delivered early. Never reorder audio; re-anchor on this block.
            self.resyncs += 1
            self.offset = capture_time - t_samples
            return 0
        block_s = n_samples / self.rate
        gain = block_s * self._alpha_per_s
        step = late * gain if gain < 1.0 else late
        cap = self.max_drift * block_s
        self.offset = off + (cap if step > cap else -cap if step < -cap else step)
        return 0
