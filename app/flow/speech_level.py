"""Whether speech voice activity hears is the user's, judged by how loud it is.

silero-vad answers "is this speech?", not "is this the person at the microphone?": far-off
talkers (a café, a television in the next room) score as speech just as the user does.
Measured on the benchmark's `noise_babble_turn`: four espeak talkers mixed at -38 dBFS
score 0.96-1.00 in nearly every 32 ms window, so voice activity never heard the user's
turn end, the end-of-turn model was never asked, and the turn stayed open for as long as
the babble went on. The user, close to the microphone, is much louder: their loud
windows ran at about -18 dBFS against the babble's -38.

So a window silero calls speech counts as the user's only when its level says so too,
in one of two ways:

* near the user's own level: no more than `margin_db` below it. The user's level is a
  high percentile (the loud part of speech, which word edges do not drag down) of the
  windows counted as their speech over the last few seconds of it;
* or clearly above the room: `above_room_db` over a low percentile of the last two
  seconds' levels. This lets a user who stepped back from the microphone (12 dB quieter)
  through in a quiet room, where babble, which *is* the room's level, stays out. What
  gets through is learned, so the user's level follows them down within a few seconds.

Levels are energy averaged over `smooth_windows` (about a quarter second), so a gap
between syllables does not end the user's speech and one loud peak of the babble does
not start it. Starting is quicker: a window above the floor that rises `rise_db` over
the level just before it (someone starting to talk in a quiet room) starts speech
without waiting for the average to catch up.

Only stretches of counted speech at least `commit_windows` long teach the level: a blip
of the room that slipped through is not learned and cannot pull the level down towards
the room. Until `learn_windows` of speech have been heard there is no floor, and
everything silero calls speech counts, as before.

The limit, measured offline with espeak speech whose loud windows ran at about -19 dBFS:
babble at -38 and -35 dBFS stayed out (at most one blip in 20 s), and the user's speech
ended within 0.2 s of its real end; at -32 and -30 dBFS (10-13 dB under the user's loud
windows, a floor of -29) the babble got through a few times in 20 s, and the end of the
user's speech was heard 0.2-1.5 s late. On the benchmark's other scenarios the speech
edges were those of silero alone, save a few ends 10-100 ms earlier.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

# Below this a window is digital silence.
_SILENT_DB = -100.0
# A rise is measured against the averaged level this many windows earlier: before the
# first window of a two-window onset run.
RISE_LAG = 2


def energy_db(energy: float) -> float:
    """Mean square (full scale 1.0) to dBFS."""
    return 10.0 * float(np.log10(energy)) if energy > 1e-10 else _SILENT_DB


@dataclass(frozen=True)
class Level:
    """One window's loudness, four ways (dBFS)."""

    now: float  # this window alone
    slow: float  # averaged over the last `smooth_windows`: what holds speech open
    before: float  # `slow` RISE_LAG windows earlier: the room just before a start
    room: float  # the room's background: a low percentile of the recent `slow` levels


class SpeechLevel:
    """The user's speech level, learned from their speech, and what counts as theirs."""

    def __init__(
        self,
        *,
        margin_db: float = 10.0,
        above_room_db: float | None = 8.0,
        rise_db: float = 10.0,
        smooth_windows: int = 8,
        room_windows: int = 64,
        room_percentile: float = 20.0,
        history_windows: int = 150,
        learn_windows: int = 16,
        commit_windows: int = 8,
        percentile: float = 80.0,
    ) -> None:
        if not 3.0 <= margin_db <= 60.0:
            raise ValueError("the speech level margin must lie between 3 and 60 dB")
        if min(smooth_windows, room_windows, learn_windows, commit_windows) < 1 or (
            history_windows < learn_windows
        ):
            raise ValueError("the speech level's window counts must be at least 1, and "
                             "history_windows at least learn_windows")
        self.margin_db = margin_db
        self.above_room_db = above_room_db
        self.rise_db = rise_db
        self.room_percentile = room_percentile
        self.percentile = percentile
        self.learn_windows = learn_windows
        self.commit_windows = commit_windows
        self._recent: deque[float] = deque(maxlen=smooth_windows)  # energies
        self._slow: deque[float] = deque([_SILENT_DB] * RISE_LAG, maxlen=RISE_LAG)
        self._room: deque[float] = deque(maxlen=room_windows)
        self._learned: deque[float] = deque(maxlen=history_windows)  # dB of counted speech
        self._stretch: list[float] = []  # the current stretch, until it is long enough
        self._estimate: float | None = None

    def measure(self, window: np.ndarray) -> Level:
        """The level of `window`, the next one of the stream."""
        x = np.asarray(window, dtype=np.float64)
        energy = float(np.mean(x * x)) if len(x) else 0.0
        self._recent.append(energy)
        slow = energy_db(sum(self._recent) / len(self._recent))
        before = self._slow[0]
        self._slow.append(slow)
        self._room.append(slow)
        room = float(np.percentile(np.fromiter(self._room, float), self.room_percentile))
        return Level(energy_db(energy), slow, before, room)

    @property
    def user_level(self) -> float | None:
        """The loud part of the user's speech (dBFS), once enough of it has been heard."""
        return self._estimate

    @property
    def floor(self) -> float | None:
        """Speech quieter than this (dBFS) is the room's unless it stands out of the
        room; None while the user's level is still unknown."""
        return None if self._estimate is None else self._estimate - self.margin_db

    def holds(self, level: Level) -> bool:
        """Whether speech at `level` is the user's (keeps their speech going)."""
        floor = self.floor
        return floor is None or level.slow >= floor or self._above_room(level)

    def starts(self, level: Level) -> bool:
        """Whether speech at `level` may start the user's speech: as `holds`, or sooner,
        a window above the floor that rose well over the level just before it."""
        if self.holds(level):
            return True
        floor = self.floor
        return floor is not None and level.now >= floor and (
            level.now >= level.before + self.rise_db)

    def _above_room(self, level: Level) -> bool:
        return self.above_room_db is not None and level.slow >= level.room + self.above_room_db

    def learn(self, level: Level) -> None:
        """A window counted as the user's speech, in the current stretch of it."""
        if level.slow <= _SILENT_DB:
            return
        self._stretch.append(level.slow)
        if len(self._stretch) < self.commit_windows:
            return
        self._learned.extend(self._stretch)
        self._stretch.clear()
        if len(self._learned) >= self.learn_windows:
            self._estimate = float(np.percentile(np.fromiter(self._learned, float),
                                                 self.percentile))

    def stretch_ended(self) -> None:
        """The user's speech stopped: a stretch too short to learn from is forgotten."""
        self._stretch.clear()

    def reset(self) -> None:
        """A new stream: forget the recent windows, not the user's level."""
        self._recent.clear()
        self._stretch.clear()
        self._room.clear()
        self._slow.extend([_SILENT_DB] * RISE_LAG)
