"""The session's side of recording: what it hands the recorder, and what it says when
recording cannot start or stops.

The listener gives it each tick of the microphone (at the tick rate; resampled here to
the recording's rate and placed on one continuous clock from the first tick) and each
block of what the speaker played; every event but the level meters goes to the log.

Recording is never a reason to refuse or end a conversation: a folder that cannot be
written, or a disk that fills up, becomes one RECORDING event (data: `recording` False,
`message` a sentence for the user, `folder` where what was kept lies, or None) and the
conversation goes on. A recording that starts well also says so (`recording` True).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.flow.events import EventHub, EventKind, SessionEvent
from app.flow.recording import SessionRecorder, open_recorder
from app.flow.resample import StreamResampler


class SessionRecording:
    def __init__(self, events: EventHub, tick_rate: int, rate: int) -> None:
        self._events = events
        self.rate = rate
        self.recorder: SessionRecorder | None = None
        self._to_rate = StreamResampler(tick_rate, rate)
        self._anchor: float | None = None  # session time of the first user sample
        self._out = 0  # user samples handed on so far, at `rate`
        self._now = 0.0

    def start(self, parent: Path, t: float = 0.0) -> None:
        """Open a recording in a new folder under `parent`, or say why not."""
        recorder, problem = open_recorder(parent, self.rate, on_failure=self._failed)
        if recorder is None:
            self._events.emit(EventKind.RECORDING, t, recording=False, message=problem,
                              folder=None)
            return
        self.recorder = recorder
        self._events.subscribe(self._log_event)
        self._events.emit(EventKind.RECORDING, t, recording=True, message="",
                          folder=str(recorder.folder))

    def user(self, mic: np.ndarray, t: float) -> None:
        """One tick of the microphone (tick rate) starting at session time `t`."""
        recorder = self.recorder
        if recorder is None or recorder.closed:
            return
        self._now = t
        if self._anchor is None:
            self._anchor = t
        out = self._to_rate.process(mic)
        start = self._anchor + self._out / self.rate
        self._out += len(out)
        recorder.write_user(out, start)

    def assistant(self, samples: np.ndarray, t: float) -> None:
        """What the speaker played (at the recording's rate) from session time `t`."""
        recorder = self.recorder
        if recorder is not None and not recorder.closed:
            recorder.write_assistant(samples, t)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def _log_event(self, event: SessionEvent) -> None:
        recorder = self.recorder
        if recorder is not None and event.kind is not EventKind.LEVELS:
            recorder.event(str(event.kind), event.t, **event.data)

    def _failed(self, message: str) -> None:
        folder = self.recorder.folder if self.recorder is not None else None
        self._events.emit(EventKind.RECORDING, self._now, recording=False, message=message,
                          folder=str(folder) if folder else None)
