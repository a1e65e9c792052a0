"""Voice activity on the (echo-cancelled) microphone: where speech starts and ends.

silero-vad scores 512-sample windows at 16 kHz (32 ms). This module turns the scores into
onsets and offsets with hysteresis: an onset needs `min_speech_ms` of windows above
`threshold`, an offset needs `min_silence_ms` below `threshold - 0.15` (silero's own
recommended gap). Times are on the session clock: an onset is stamped with the start of
its first speech window, an offset with the end of its last one. A single window scored
above `strong_threshold` is an onset by itself. What an onset or an
offset *means* (end of turn, barge-in, backchannel) is the duplex controller's business.

A window counts as the user's speech only when its level says so too: near the user's
own level, learned as they talk, or clearly above the room's (speech_level.py). Far-off
talkers score as speech to silero; without this, background babble at -38 dBFS kept the
user's turn open for as long as it went on. Speech that silero still hears but that has
fallen to the room's level ends after `min_quiet_ms`, longer than `min_silence_ms`, so
that a soft syllable does not split the user's speech.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from app.flow.speech_level import Level, SpeechLevel

WINDOW = 512
RATE = 16000
WINDOW_SECONDS = WINDOW / RATE


class VadKind(enum.StrEnum):
    ONSET = "onset"
    OFFSET = "offset"


@dataclass(frozen=True)
class VadEvent:
    kind: VadKind
    t: float  # session-clock seconds: where speech began (onset) or ended (offset)
    detected_at: float  # session-clock seconds of the audio that made the decision


class VoiceActivity:
    def __init__(
        self,
        *,
        threshold: float = 0.5,
        strong_threshold: float = 0.8,
        min_speech_ms: float = 64.0,
        min_silence_ms: float = 96.0,
        min_quiet_ms: float = 192.0,
        model=None,
        level: SpeechLevel | None = None,
    ) -> None:
        import torch

        if model is None:
            from silero_vad import load_silero_vad

            model = load_silero_vad()
        self._torch = torch
        self._model = model
        self.threshold = threshold
        # One window this sure is speech at once: a barge-in is heard 32 ms sooner.
        self.strong_threshold = strong_threshold
        self.off_threshold = max(0.05, threshold - 0.15)
        self._need_speech = max(1, round(min_speech_ms / 1000 / WINDOW_SECONDS))
        self._need_silence = max(1, round(min_silence_ms / 1000 / WINDOW_SECONDS))
        # Speech that silero still hears but that fell to the room's level (below the
        # user's floor) ends the user's speech after this longer run: a soft syllable
        # dips for less, and the end of a turn is timed from the last speech anyway.
        self._need_quiet = max(self._need_silence,
                               round(min_quiet_ms / 1000 / WINDOW_SECONDS))
        self._quiet_run = 0  # windows in a row without the user's speech, for any reason
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_t = 0.0
        self.speaking = False
        self._run = 0  # windows in a row that argue for switching state
        self._run_start = 0.0  # where that run began
        self._last_speech_end = 0.0
        self.last_probability = 0.0
        # The user's own level: quieter voices (the room's) are not their speech.
        self.level = level if level is not None else SpeechLevel()
        self.last_level: Level | None = None

    @property
    def speech_until(self) -> float | None:
        """While speaking: the end of the last window that still sounded like speech.

        The offset is confirmed only after `min_silence_ms`; until then this is where the
        speech most likely ended, so a duration measured to here is not stretched by the
        confirmation delay.
        """
        return self._last_speech_end if self.speaking else None

    def reset(self) -> None:
        self._model.reset_states()
        self._pending = np.zeros(0, dtype=np.float32)
        self.speaking = False
        self._run = self._quiet_run = 0
        self.level.reset()

    def feed(self, samples: np.ndarray, t: float) -> list[VadEvent]:
        """Score 16 kHz mono `samples` starting at session time `t`; return new events."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(self._pending) == 0:
            self._pending_t = t
        buf = np.concatenate([self._pending, samples])
        events: list[VadEvent] = []
        whole = len(buf) // WINDOW * WINDOW
        window_t = self._pending_t
        with self._torch.inference_mode():
            for start in range(0, whole, WINDOW):
                window = buf[start : start + WINDOW].copy()
                prob = float(self._model(self._torch.from_numpy(window), RATE))
                event = self._decide(prob, window_t, self.level.measure(window))
                if event is not None:
                    events.append(event)
                window_t += WINDOW_SECONDS
        self._pending = buf[whole:]
        self._pending_t = window_t
        return events

    def _decide(self, prob: float, window_t: float, level: Level) -> VadEvent | None:
        self.last_probability = prob
        self.last_level = level
        window_end = window_t + WINDOW_SECONDS
        if not self.speaking:
            if prob >= self.threshold and self.level.starts(level):
                if self._run == 0:
                    self._run_start = window_t
                self._run += 1
                if self._run >= self._need_speech or prob >= self.strong_threshold:
                    self.speaking = True
                    self._run = 0
                    self._last_speech_end = window_end
                    self.level.learn(level)
                    return VadEvent(VadKind.ONSET, self._run_start, window_end)
            else:
                self._run = 0
            return None
        loud_enough = self.level.holds(level)
        if prob >= self.threshold and loud_enough:
            self.level.learn(level)
        silent = prob < self.off_threshold
        self._run = self._run + 1 if silent else 0
        self._quiet_run = self._quiet_run + 1 if silent or not loud_enough else 0
        if self._quiet_run == 0:
            self._last_speech_end = window_end
        if self._run >= self._need_silence or self._quiet_run >= self._need_quiet:
            self.speaking = False
            self._run = self._quiet_run = 0
            self.level.stretch_ended()
            return VadEvent(VadKind.OFFSET, self._last_speech_end, window_end)
        return None
