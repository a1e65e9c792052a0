"""Sets of sample ranges (half-open, absolute indices) that hold filled-in silence."""

from __future__ import annotations

import bisect


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class SpanSet:
    """Sorted, disjoint [start, stop) ranges; adding an overlapping range merges it.

    Few ranges exist at once (one per gap or overflow not yet cut into a unit), so plain
    lists are enough.
    """

    __slots__ = ("_starts", "_stops")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []

    def __len__(self) -> int:
        return len(self._starts)

    def spans(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._stops, strict=True))

    def add(self, start: int, stop: int) -> None:
        if stop <= start:
            return
        # Ranges touching or overlapping [start, stop) are merged into one.
        lo = bisect.bisect_left(self._stops, start)
        hi = bisect.bisect_right(self._starts, stop)
        if lo < hi:
            start = min(start, self._starts[lo])
            stop = max(stop, self._stops[hi - 1])
        self._starts[lo:hi] = [start]
        self._stops[lo:hi] = [stop]

    def drop_before(self, pos: int) -> None:
        """Forget ranges that end at or before `pos`."""
        k = bisect.bisect_right(self._stops, pos)
        del self._starts[:k]
        del self._stops[:k]

    def count_mapped(self, out_start: int, out_stop: int, up: int, down: int) -> int:
        """How many output samples m in [out_start, out_stop) sit inside a range.

        Output m sits at input position m * down / up; it is inside [a, b) when
        a <= m * down / up < b, i.e. ceil(a*up/down) <= m < ceil(b*up/down).
        """
        total = 0
        for a, b in zip(self._starts, self._stops, strict=True):
            lo = max(_ceil_div(a * up, down), out_start)
            hi = min(_ceil_div(b * up, down), out_stop)
            if hi > lo:
                total += hi - lo
        return total
