"""HeapTrimmer: rate-limited malloc_trim, harmless where the C library has none."""

from __future__ import annotations

import platform

import pytest

from app.flow.heap import HeapTrimmer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trims_at_most_once_per_period() -> None:
    clock = FakeClock()
    calls: list[int] = []
    trimmer = HeapTrimmer(10.0, clock=clock, trim=lambda pad: calls.append(pad) or 1)
    assert not trimmer.maybe_trim()  # the period starts when the trimmer is made
    clock.now += 9.9
    assert not trimmer.maybe_trim()
    clock.now += 0.2
    assert trimmer.maybe_trim()
    assert not trimmer.maybe_trim()  # just trimmed
    clock.now += 10.0
    assert trimmer.maybe_trim()
    assert calls == [0, 0]  # pad 0: give back everything free
    assert trimmer.trims == 2
    # The resident size just after each trim, at the trim's clock time.
    assert [t for t, _ in trimmer.kept] == pytest.approx([110.1, 120.1])
    assert all(rss > 1 << 20 for _, rss in trimmer.kept)


def test_a_failing_trim_is_dropped_and_the_session_goes_on() -> None:
    clock = FakeClock()

    def broken(pad: int) -> int:
        raise OSError("no such symbol")

    trimmer = HeapTrimmer(1.0, clock=clock, trim=broken)
    clock.now += 2
    assert not trimmer.maybe_trim()
    assert not trimmer.available
    clock.now += 2
    assert not trimmer.maybe_trim()


def test_without_malloc_trim_it_does_nothing() -> None:
    clock = FakeClock()
    trimmer = HeapTrimmer(1.0, clock=clock, trim=None)
    clock.now += 5
    assert not trimmer.available and not trimmer.maybe_trim()


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_glibc_trim_is_found_and_runs() -> None:
    clock = FakeClock()
    trimmer = HeapTrimmer(1.0, clock=clock)
    assert trimmer.available
    clock.now += 2
    assert trimmer.maybe_trim() and trimmer.trims == 1
