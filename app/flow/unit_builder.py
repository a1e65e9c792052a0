"""Cleaned ticks gathered into units of the backend's length (the session's listener).

A unit holds exactly the backend's unit of audio (a native-duplex model steps on whole
frames), the latest camera frame seen during it, and how much of it the timeline filled
with silence; what is left over starts the next unit. The turn's last unit goes out
early, padded to MIN_FINAL_UNIT_SECONDS (`take`).
"""

from __future__ import annotations

import numpy as np

from app.model.contract import Unit

MIN_FINAL_UNIT_SECONDS = 0.1


class UnitBuilder:
    """Gathers cleaned ticks into units of the backend's length."""

    def __init__(self, unit_seconds: float, rate: int) -> None:
        self.unit_samples = round(unit_seconds * rate)
        self.rate = rate
        self._parts: list[np.ndarray] = []
        self._n = 0
        self._start = 0.0
        self._frames: tuple = ()
        self._gap = 0
        self._had_speech = False
        self.index = 0

    def add(self, tick: Unit, cleaned: np.ndarray, speech: bool) -> list[Unit]:
        """Add one tick's audio (at the backend's rate); return the units it completed.

        Units hold exactly the backend's unit length (a native-duplex model steps on
        whole frames); what is left over starts the next unit.
        """
        if self._n == 0:
            self._start = tick.start
            self._had_speech = False
            self._gap = 0
        self._parts.append(cleaned)
        self._n += len(cleaned)
        if tick.frames:
            self._frames = tick.frames
        self._gap += tick.gap_samples
        self._had_speech |= speech
        done = []
        while self._n >= self.unit_samples:
            audio = np.concatenate(self._parts)
            rest = audio[self.unit_samples :]
            self._parts, self._n = [audio[: self.unit_samples]], self.unit_samples
            unit = self.take()
            done.append(unit)
            if len(rest):
                self._parts, self._n = [rest.copy()], len(rest)
                self._start = unit.end
                self._gap = 0
                self._frames = tick.frames
        return done

    @property
    def had_speech(self) -> bool:
        return self._had_speech

    @property
    def pending_seconds(self) -> float:
        """Audio gathered for the unit in progress."""
        return self._n / self.rate

    def take(self, min_seconds: float = 0.0, now: float | None = None) -> Unit | None:
        """The unit gathered so far (None if empty), padded to `min_seconds` if asked."""
        if self._n == 0:
            if min_seconds <= 0 or now is None:
                return None
            self._start = now
            self._frames = ()
            self._gap = 0
        short = round(min_seconds * self.rate) - self._n
        if short > 0:
            self._parts.append(np.zeros(short, dtype=np.float32))
            self._n += short
        audio = np.concatenate(self._parts)
        unit = Unit(
            index=self.index,
            start=self._start,
            duration=len(audio) / self.rate,
            sample_rate=self.rate,
            audio=audio,
            frames=self._frames[-1:] if self._frames else (),
            gap_samples=self._gap,
        )
        self.index += 1
        self._parts, self._n = [], 0
        self._frames = ()  # each unit shows only frames from its own span
        return unit
