"""When a live stream's run of speech may start: late enough that the units after it,
however late they come, find the player still playing.

A native-duplex model that steps in long units (MiniCPM-o: one second of audio a step)
writes each unit's audio in one burst, as soon as the step is done: `lag` seconds after
the unit's end on the timeline. Played back to back, unit k+1's audio must arrive
before unit k's runs out, so a run of speech that starts playing `lead` seconds after
its first unit arrived plays on without a gap as long as no later unit of it comes more
than `lead` later than that one did. The lag is not steady: on the tiny model on a
2-core CPU a turn's first unit took 0.26-0.40 s and later ones 0.32-0.52 s (the speech
decoder's and token2wav's caches grow through a turn), so a fixed 150 ms cushion after
a cheap first unit ran dry once in several answers.

So the lead is sized from what this stream has shown: the lags of the units that
carried sound, the latest `keep` of them. Until it has seen a few (the first answer of
a conversation), it assumes a later unit may take up to `first_factor` times what this
one took. Then the cushion goes on top, for the scatter of threads and devices.

Lags are measured here, from the stream itself: a chunk starting at stream position p
(samples) that arrives at time t is `t - p / rate` late against the stream's own clock;
the least of that over the last `window` seconds is the stream's floor (a listening
unit, which costs next to nothing), and a chunk's lag is how far above the floor it is.
Only a stream that keeps its units' length (as MiniCPM-o's does, live_voice.py) has a
steady floor; the window lets a floor that moved be forgotten.
"""

from __future__ import annotations

from collections import deque


class LivePace:
    """Lags of one live stream's chunks and the lead a run of speech needs. Used by the
    player's writers, under their lock."""

    def __init__(self, rate: int, *, window: float = 30.0, keep: int = 32,
                 trusted_after: int = 3, first_factor: float = 2.0) -> None:
        self.rate = rate
        self.window = window
        self.trusted_after = trusted_after
        self.first_factor = first_factor
        self._late: deque[tuple[float, float]] = deque()  # (arrival, lateness)
        self.sound_lags: deque[float] = deque(maxlen=keep)

    def note(self, arrival: float, position: int, sound: bool) -> float:
        """A chunk starting at stream `position` arrived at `arrival`: its lag (s)."""
        late = arrival - position / self.rate
        self._late.append((arrival, late))
        while self._late and self._late[0][0] < arrival - self.window:
            self._late.popleft()
        lag = late - min(x for _, x in self._late)
        if sound:
            self.sound_lags.append(lag)
        return lag

    def lead(self, lag: float, cushion: float) -> float:
        """Seconds a run whose first chunk came `lag` late must wait after it arrived."""
        worst = max(self.sound_lags, default=0.0)
        if len(self.sound_lags) < self.trusted_after:
            worst = max(worst, self.first_factor * lag)
        return max(0.0, worst - lag) + cushion
