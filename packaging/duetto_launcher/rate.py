"""Bytes per second over the last few seconds, and the time left in words."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class Rate:
    """Download speed from the last `window_s` seconds of samples (one slow start or a
    stall does not stick to the estimate for the rest of the download)."""

    def __init__(self, window_s: float = 8.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, done_bytes: int) -> None:
        now = self.clock()
        self.samples.append((now, done_bytes))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    def bytes_per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 0.5:
            return None
        return max(b1 - b0, 0) / (t1 - t0)

    def seconds_left(self, remaining_bytes: int) -> float | None:
        speed = self.bytes_per_second()
        if not speed:
            return None
        return remaining_bytes / speed


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def time_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left…"
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"
