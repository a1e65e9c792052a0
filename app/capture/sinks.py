"""What capture sources push into, and what they report when a device fails.

Capture sits below flow (ui -> flow -> model/capture), so sources talk to
these protocols; the timeline in `app/flow/timeline.py` implements them.

Times: every `capture_time` is in seconds on `time.monotonic()`'s axis (or, for a
file source replaying as fast as possible, on a virtual axis that starts at 0.0 and
advances by media time, shared by the audio and video file sources of one session).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class AudioSink(Protocol):
    def push_audio(
        self, samples: np.ndarray, sample_rate: int, capture_time: float | None = None
    ) -> None:
        """Append float32 mono `samples` captured at `sample_rate`.

        `capture_time` is when the first sample was captured (ADC time), or None when
        the source cannot tell; the timeline uses it to detect gaps, never to reorder.
        Must be cheap: it is called from the audio device's callback.
        """


class FrameSink(Protocol):
    def push_frame(self, pixels: np.ndarray, capture_time: float) -> None:
        """Add one H×W×3 uint8 RGB frame captured at `capture_time`."""


class SourceEventKind(enum.StrEnum):
    STARTED = "started"
    STOPPED = "stopped"  # ended normally (stop() called, or a file source reached its end)
    LOST = "lost"  # the device failed or disappeared; the source has stopped cleanly


@dataclass(frozen=True)
class SourceEvent:
    source: str  # "camera", "microphone", or a file source's name
    kind: SourceEventKind
    message: str = ""


EventCallback = Callable[[SourceEvent], None]
