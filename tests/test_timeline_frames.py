"""Which frames land in which unit, and which are let go (and counted)."""

from __future__ import annotations

import numpy as np
import pytest

from app.flow.timeline import Timeline
from tests.helpers_timeline import frame, noise

OUT = 16000
T0 = 50.0  # capture clock at the first audio sample


def timeline(per_unit: int = 1, **kwargs) -> Timeline:
    tl = Timeline(1.0, OUT, frames_per_unit=per_unit, **kwargs)
    tl.push_audio(noise(10), OUT, T0)  # anchors the clock: session 0 = capture T0
    return tl


def fill(tl: Timeline, until_s: float) -> None:
    """Push silence-free audio up to session time `until_s` (after the anchor block)."""
    have = round(tl.stats().audio_seconds * OUT)
    n = round(until_s * OUT) - have
    tl.push_audio(noise(n, seed=have), OUT, T0 + have / OUT)


def times(unit) -> list[float]:
    return [round(f.t, 6) for f in unit.frames]


def test_latest_frame_at_or_before_the_unit_end_is_chosen():
    tl = timeline()
    for t in (0.01, 0.5, 0.99, 1.0, 1.01):
        tl.push_frame(frame(int(t * 100)), T0 + t)
    fill(tl, 2.0)
    first, second = tl.next_unit(), tl.next_unit()
    assert times(first) == [1.0]  # the end itself counts as "at or before"
    assert times(second) == [1.01]
    assert first.frames[0].pixels[0, 0, 0] == 100


def test_n_frames_evenly_spaced_across_the_unit():
    tl = timeline(per_unit=4)
    for k in range(31):  # 30 fps
        tl.push_frame(frame(k), T0 + k / 30)
    fill(tl, 1.0)
    unit = tl.next_unit()
    # slots end at 0.25, 0.5, 0.75, 1.0: the newest frame at or before each
    assert [f.seq for f in unit.frames] == [7, 15, 22, 30]
    assert times(unit) == sorted(times(unit))


def test_frames_arriving_out_of_order_are_placed_by_time():
    tl = timeline(per_unit=2)
    for t in (0.9, 0.3, 0.6, 0.2):
        tl.push_frame(frame(int(t * 10)), T0 + t)
    fill(tl, 1.0)
    unit = tl.next_unit()
    assert times(unit) == [0.3, 0.9]  # oldest first, whatever the arrival order


def test_equal_timestamps_the_later_arrival_wins_and_the_other_is_skipped():
    tl = timeline()
    tl.push_frame(frame(1), T0 + 0.5)
    tl.push_frame(frame(2), T0 + 0.5)
    fill(tl, 2.0)
    unit = tl.next_unit()
    assert [f.pixels[0, 0, 0] for f in unit.frames] == [2]
    tl.next_unit()
    stats = tl.stats()
    assert stats.frames_delivered == 1 and stats.frames_skipped == 1


def test_frames_too_old_for_any_unit_still_to_cut_are_dropped_and_counted():
    tl = timeline()
    tl.push_frame(frame(1), T0 + 0.5)
    fill(tl, 1.0)
    assert times(tl.next_unit()) == [0.5]
    # Unit 1 [1, 2) is next; the frame at 0.5 still covers its start.
    tl.push_frame(frame(2), T0 + 0.7)  # newer than 0.5: it can still be unit 1's frame
    tl.push_frame(frame(3), T0 + 0.6)  # older than 0.7, before unit 1: useless
    assert tl.stats().frames_late == 1
    fill(tl, 2.0)
    assert times(tl.next_unit()) == [0.7]
    stats = tl.stats()
    assert stats.frames_dropped == 1
    assert stats.frames_pushed == (stats.frames_delivered + stats.frames_skipped
                                   + stats.frames_dropped + stats.frames_pending)


def test_a_slow_camera_repeats_its_last_frame():
    tl = timeline()
    tl.push_frame(frame(1), T0 + 0.2)
    fill(tl, 3.0)
    units = [tl.next_unit() for _ in range(3)]
    assert [times(u) for u in units] == [[0.2], [0.2], [0.2]]
    assert tl.stats().frames_delivered == 1


def test_frame_age_limit_leaves_stale_slots_empty():
    tl = timeline(frame_max_age=0.5)
    tl.push_frame(frame(1), T0 + 0.2)
    fill(tl, 2.0)
    assert times(tl.next_unit()) == []  # 0.8 s old at the slot: too stale
    tl2 = timeline(frame_max_age=0.5)
    tl2.push_frame(frame(1), T0 + 0.6)
    fill(tl2, 1.0)
    assert times(tl2.next_unit()) == [0.6]


def test_slow_consumer_full_frame_buffer_drops_oldest_and_counts():
    tl = timeline(frame_capacity=8)
    for k in range(20):
        tl.push_frame(frame(k), T0 + k / 30)
    stats = tl.stats()
    assert stats.frames_dropped == 12 and stats.frames_pending == 8
    fill(tl, 1.0)
    assert [f.seq for f in tl.next_unit().frames] == [19]


def test_frames_before_the_first_audio_are_placed_once_the_clock_is_known():
    tl = Timeline(1.0, OUT)
    tl.push_frame(frame(1), T0 - 0.1)  # before audio started: session time -0.1
    tl.push_audio(noise(OUT), OUT, T0)
    unit = tl.next_unit()
    assert times(unit) == [-0.1]


def test_frames_and_untimed_audio_cannot_be_placed():
    tl = Timeline(1.0, OUT)
    tl.push_frame(frame(1), 0.5)
    tl.push_audio(noise(OUT), OUT)  # no capture time: no mapping to the session clock
    assert tl.next_unit().frames == ()


def test_no_frames_per_unit_still_keeps_the_buffer_bounded():
    tl = timeline(per_unit=0, frame_capacity=4)
    for k in range(90):
        tl.push_frame(frame(k), T0 + k / 30)
        if k % 30 == 29:
            fill(tl, (k + 1) / 30)
            assert tl.next_unit().frames == ()
    assert tl.stats().frames_pending <= 4


@pytest.mark.parametrize(
    "pixels, when, message",
    [
        (np.zeros((4, 6), np.uint8), 0.0, "H×W×3 uint8"),
        (np.zeros((4, 6, 4), np.uint8), 0.0, "H×W×3 uint8"),
        (np.zeros((4, 6, 3), np.float32), 0.0, "H×W×3 uint8"),
        ("not a frame", 0.0, "H×W×3 uint8"),
        (np.zeros((4, 6, 3), np.uint8), float("inf"), "finite"),
        (np.zeros((4, 6, 3), np.uint8), None, "finite"),
    ],
)
def test_bad_frames_get_a_clear_error(pixels, when, message):
    with pytest.raises(ValueError, match=message):
        timeline().push_frame(pixels, when)
