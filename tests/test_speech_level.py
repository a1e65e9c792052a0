"""The user's speech level: what counts as their speech, decided from levels alone."""

from __future__ import annotations

import numpy as np
import pytest

from app.flow.speech_level import Level, SpeechLevel


def level(slow: float, *, now: float | None = None, before: float = -90.0,
          room: float = -90.0) -> Level:
    return Level(slow if now is None else now, slow, before, room)


def learned(db: float, windows: int = 40, **kw) -> SpeechLevel:
    tracker = SpeechLevel(**kw)
    for _ in range(windows):
        tracker.learn(level(db))
    return tracker


def test_no_floor_until_enough_speech_is_heard():
    tracker = SpeechLevel(learn_windows=16, commit_windows=8)
    assert tracker.floor is None and tracker.holds(level(-80.0))
    for _ in range(15):
        tracker.learn(level(-20.0))
    assert tracker.floor is None
    tracker.learn(level(-20.0))
    assert tracker.user_level == pytest.approx(-20.0)
    assert tracker.floor == pytest.approx(-20.0 - tracker.margin_db)


def test_speech_far_under_the_user_in_a_room_that_loud_is_not_theirs():
    tracker = learned(-18.0)
    # Babble: well under the user's level, and no louder than the room it makes.
    assert not tracker.holds(level(-36.0, room=-38.0))
    assert not tracker.starts(level(-36.0, now=-33.0, before=-37.0, room=-38.0))
    # The user themselves, over it.
    assert tracker.holds(level(-22.0, room=-38.0))


def test_quieter_speech_in_a_quiet_room_is_still_the_users():
    tracker = learned(-18.0)
    assert tracker.holds(level(-31.0, room=-70.0))  # 13 dB under, far above the room


def test_a_sharp_rise_starts_speech_before_the_average_catches_up():
    tracker = learned(-18.0, above_room_db=None)
    # The average still holds the quiet before; the window itself is loud and rose.
    assert tracker.starts(level(-40.0, now=-24.0, before=-50.0))
    assert not tracker.holds(level(-40.0, now=-24.0, before=-50.0))
    # A babble peak rises only a little over the babble.
    assert not tracker.starts(level(-36.0, now=-27.0, before=-35.0))


def test_short_blips_are_not_learned():
    """Babble that slips through now and then must not teach the user's level."""
    tracker = learned(-18.0, windows=24)
    for _ in range(20):  # twenty blips, each a window short of a stretch worth learning
        for _ in range(7):  # the default stretch worth learning is 8 windows
            tracker.learn(level(-40.0))
        tracker.stretch_ended()
    tracker.learn(level(-18.0))
    assert tracker.user_level == pytest.approx(-18.0)


def test_the_level_follows_a_user_who_got_quieter():
    tracker = learned(-18.0, windows=150)
    for _ in range(150):
        tracker.learn(level(-30.0))
    assert tracker.user_level == pytest.approx(-30.0)


@pytest.mark.parametrize("kw", [{"margin_db": 1.0}, {"smooth_windows": 0},
                                {"history_windows": 4, "learn_windows": 8}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        SpeechLevel(**kw)


def test_measure_averages_energy_over_recent_windows():
    tracker = SpeechLevel(smooth_windows=2)
    quiet = np.zeros(512, np.float32)
    loud = np.full(512, 0.1, np.float32)  # -20 dBFS
    tracker.measure(quiet)
    got = tracker.measure(loud)
    assert got.now == pytest.approx(-20.0)
    assert got.slow == pytest.approx(-20.0 - 10 * np.log10(2))
