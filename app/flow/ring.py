"""A fixed-size float32 ring addressed by absolute sample index.

Positions are absolute (sample n of the session stays n), so a reader and a writer can
talk about the same samples without wrap-around arithmetic leaking out. The ring itself
takes no lock: its owner (the timeline) serialises access.
"""

from __future__ import annotations

import numpy as np


class AudioRing:
    """Holds the newest `capacity` samples not yet read; never grows.

    `write` appends (optionally after a run of silence); when the unread samples would
    exceed the capacity it drops the oldest unread ones and says which, so the owner can
    report the overflow instead of losing audio silently.
    """

    __slots__ = ("_buf", "capacity", "read_pos", "write_pos")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be at least one sample, got {capacity}")
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.float32)
        self.read_pos = 0  # first unread sample
        self.write_pos = 0  # one past the newest sample

    @property
    def buffered(self) -> int:
        return self.write_pos - self.read_pos

    def write(self, block: np.ndarray, zeros_before: int = 0) -> tuple[int, int] | None:
        """Append `zeros_before` zeros then `block`; return the (start, stop) dropped, if any."""
        n = len(block)
        w = self.write_pos
        new_w = w + zeros_before + n
        cap = self.capacity
        if zeros_before == 0 and new_w - self.read_pos <= cap:
            # The audio callback's path: one or two slice copies, nothing else.
            i = w % cap
            if i + n <= cap:
                self._buf[i : i + n] = block
            else:
                first = cap - i
                self._buf[i:] = block[:first]
                self._buf[: n - first] = block[first:]
            self.write_pos = new_w
            return None
        lost = None
        if new_w - self.read_pos > cap:
            lost = (self.read_pos, new_w - cap)
            self.read_pos = new_w - cap
        oldest_kept = new_w - cap  # anything before this would be overwritten anyway
        block_at = w + zeros_before
        z_from = max(w, oldest_kept)
        if block_at > z_from:
            self._fill(z_from, block_at, None)
        b_from = max(block_at, oldest_kept)
        if b_from < new_w:
            self._fill(b_from, new_w, block[b_from - block_at :])
        self.write_pos = new_w
        return lost

    def _fill(self, start: int, stop: int, data: np.ndarray | None) -> None:
        """Write data (or zeros) at absolute [start, stop); stop - start <= capacity."""
        cap = self.capacity
        i = start % cap
        n = stop - start
        first = min(n, cap - i)
        if data is None:
            self._buf[i : i + first] = 0.0
            self._buf[: n - first] = 0.0
        else:
            self._buf[i : i + first] = data[:first]
            self._buf[: n - first] = data[first:n]

    def read(self, start: int, stop: int) -> np.ndarray:
        """A copy of absolute samples [start, stop), which must still be in the ring."""
        if not self.read_pos <= start <= stop <= self.write_pos:
            raise IndexError(
                f"samples [{start}, {stop}) are not in the ring "
                f"(it holds [{self.read_pos}, {self.write_pos}))"
            )
        cap = self.capacity
        n = stop - start
        i = start % cap
        if i + n <= cap:
            return self._buf[i : i + n].copy()
        return np.concatenate((self._buf[i:], self._buf[: n - (cap - i)]))

    def consume_to(self, pos: int) -> None:
        """Mark everything before `pos` as read (never past what was written)."""
        self.read_pos = max(self.read_pos, min(pos, self.write_pos))
