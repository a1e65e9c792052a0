"""Per-turn and per-session figures of how well the conversation flowed.

All times are session-clock seconds. The session reports moments (the user's speech
ended, the first assistant sample reached the speaker, a barge-in began, the output went
silent) and per-unit costs; this module pairs them into latencies and summarises them
with medians and 90th percentiles, which is how duplex benchmarks report them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Summary:
    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        median = statistics.median(values) if values else None
        return cls(len(values), median, _quantile(values, 0.9))


@dataclass
class SessionMetrics:
    turn_taking: list[float] = field(default_factory=list)  # user speech end -> first audio
    stop: list[float] = field(default_factory=list)  # barge-in start -> output silent
    response_after_interruption: list[float] = field(default_factory=list)
    unit_compute: list[float] = field(default_factory=list)  # seconds of compute per unit
    unit_lag: list[float] = field(default_factory=list)  # unit end -> its prefill done
    speech_seconds: float = 0.0  # assistant audio generated
    speech_compute: float = 0.0  # compute spent generating it
    underruns: int = 0
    quiet_gaps: int = 0  # a live stream ran dry in its silence: unheard (player.py)
    dropped_frames: int = 0
    _user_turn_end: float | None = None
    _after_interruption: bool = False
    _barge_in_start: float | None = None

    # ------------------------------------------------------------ moments
    def user_turn_ended(self, t: float, after_interruption: bool = False) -> None:
        self._user_turn_end = t
        self._after_interruption = after_interruption

    def first_audio_out(self, t: float) -> tuple[str, float] | None:
        """The first sample of a response reached the speaker: (which latency, seconds)."""
        if self._user_turn_end is None:
            return None
        latency = t - self._user_turn_end
        if self._after_interruption:
            kind, target = "response_after_interruption", self.response_after_interruption
        else:
            kind, target = "turn_taking", self.turn_taking
        target.append(latency)
        self._user_turn_end = None
        return kind, latency

    @property
    def awaiting_silence(self) -> bool:
        """A barge-in began and the output has not been seen to go silent yet."""
        return self._barge_in_start is not None

    def barge_in_started(self, t: float) -> None:
        self._barge_in_start = t

    def output_silent(self, t: float) -> float | None:
        """Playback went silent after a barge-in; returns the stop latency."""
        if self._barge_in_start is None:
            return None
        latency = max(0.0, t - self._barge_in_start)
        self.stop.append(latency)
        self._barge_in_start = None
        return latency

    # ------------------------------------------------------------ costs
    def unit_done(self, compute_seconds: float, lag_seconds: float) -> None:
        self.unit_compute.append(compute_seconds)
        self.unit_lag.append(lag_seconds)

    def speech_generated(self, audio_seconds: float, compute_seconds: float) -> None:
        self.speech_seconds += audio_seconds
        self.speech_compute += compute_seconds

    @property
    def real_time_factor(self) -> float | None:
        """Compute time per second of speech: under 1 keeps up with playback."""
        if self.speech_seconds <= 0:
            return None
        return self.speech_compute / self.speech_seconds

    def summary(self) -> dict[str, object]:
        return {
            "turn_taking_latency": Summary.of(self.turn_taking).__dict__,
            "stop_latency": Summary.of(self.stop).__dict__,
            "response_latency_after_interruption": Summary.of(
                self.response_after_interruption
            ).__dict__,
            "unit_compute": Summary.of(self.unit_compute).__dict__,
            "unit_lag": Summary.of(self.unit_lag).__dict__,
            "real_time_factor": self.real_time_factor,
            "underruns": self.underruns,
            "quiet_gaps": self.quiet_gaps,
            "dropped_frames": self.dropped_frames,
        }
