"""A single-producer single-consumer ring of float32 samples for device callbacks.

(The timeline has its own ring, `app/flow/ring.py`, which overwrites its oldest audio
under a lock and reports it; this one never overwrites and never locks.)

The read and write positions are running sample counts (they never wrap; the buffer
index is the count modulo capacity). Each side writes only its own counter, and a
Python int assignment is atomic under the GIL, so the audio callback never takes a lock
and never waits for the other thread. The buffer is allocated once, up front.
"""

from __future__ import annotations

import numpy as np


class SpscRing:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"ring capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.float32)
        self.write_pos = 0  # total samples ever written (producer owns it)
        self.read_pos = 0  # total samples ever consumed (consumer owns it)

    @property
    def available(self) -> int:
        return self.write_pos - self.read_pos

    @property
    def free(self) -> int:
        return self.capacity - self.available

    def write(self, samples: np.ndarray) -> int:
        """Append as many samples as fit; returns how many were taken."""
        n = min(len(samples), self.free)
        if n <= 0:
            return 0
        start = self.write_pos % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = samples[:first]
        if n > first:
            self._buf[: n - first] = samples[first:n]
        self.write_pos += n  # publish only after the copy is complete
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Fill `out` from the ring; returns how many samples were real (the rest is 0)."""
        n = min(len(out), self.available)
        if n > 0:
            start = self.read_pos % self.capacity
            first = min(n, self.capacity - start)
            out[:first] = self._buf[start : start + first]
            if n > first:
                out[first:n] = self._buf[: n - first]
            self.read_pos += n
        if n < len(out):
            out[n:] = 0.0
        return n

    def skip_to(self, position: int) -> None:
        """Consumer side: drop everything before `position` (a running count)."""
        self.read_pos = max(self.read_pos, min(position, self.write_pos))
