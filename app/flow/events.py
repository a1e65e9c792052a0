"""What a session tells its subscribers (the UI bridge, the benchmark, the log).

Events are plain data stamped on the session clock. They are delivered on the session's
own threads, so a subscriber must return quickly (the UI bridge re-emits them as Qt
signals; the recorder writes a line).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class EventKind(enum.StrEnum):
    STATE = "state"  # duplex state changed: data {state, reason, response (speaking)}
    TEXT = "text"  # assistant text as produced: data {text, response}
    # Assistant text as its speech starts playing (what subtitles show): {text, response}
    SPOKEN = "spoken"
    HEARD = "heard"  # after a barge-in, what the user heard: data {text, response}
    LEVELS = "levels"  # data {mic, assistant} RMS in dBFS, {echo_coupling} dB or None
    LATENCY = "latency"  # data {kind: turn_taking|stop|response_after_interruption, seconds}
    UNIT = "unit"  # a unit reached the model: data {index, compute, lag, dropped_frames}
    DEVICE = "device"  # a capture or output device started, stopped or was lost
    OVERFLOW = "overflow"  # the timeline dropped audio: data {description}
    ERROR = "error"  # something failed; data {message}; the session keeps going if it can
    # News for the user that is not a failure: data {what, ...}; the model stalled
    # mid-answer or resumed (app/flow/stall.py): {what: "stalled"|"resumed", seconds}.
    NOTICE = "notice"
    PLAYBACK = "playback"  # the user spoke over the assistant: data {paused: bool}
    METRICS = "metrics"  # after each answer: data {summary} (SessionMetrics.summary())
    # An answer was started early: data {retracted: bool}; a retraction also says
    # {response}, the retracted answer's id (None if it had produced nothing yet).
    PREPARED = "prepared"
    ENDED = "ended"  # the session stopped: data {reason, metrics}
    # Recording started ({recording: True, folder}) or cannot go on ({recording: False,
    # message: a sentence for the user, folder: where what was kept lies, or None}); the
    # conversation goes on either way (session_recording.py).
    RECORDING = "recording"
    # The end-of-turn model judged a pause: data {probability, complete, seconds (its
    # compute), audio_seconds (what it heard), silence (how long the pause was then)}.
    TURN_JUDGED = "turn_judged"
    # The word classifier judged a short utterance over the assistant (burst_kind.py):
    # data {floor_probability, wants_floor, seconds (its compute), audio_seconds}.
    BURST_JUDGED = "burst_judged"
    # A turn-based answer's first speech chunk is ready (written to the player, held
    # while the end of the turn is not yet certain): data {response}. The benchmark splits
    # each answer's wait at this moment: the backend's part before, the flow's after.
    ANSWER_READY = "answer_ready"


@dataclass(frozen=True)
class SessionEvent:
    kind: EventKind
    t: float
    data: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        return {"event": str(self.kind), "t": round(self.t, 4), **self.data}


Subscriber = Callable[[SessionEvent], None]


class EventHub:
    """Fan-out to subscribers; one that raises is logged and kept out of the session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def emit(self, kind: EventKind, t: float, /, **data: Any) -> SessionEvent:
        event = SessionEvent(kind, t, data)
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # a broken subscriber must not stop the conversation
                log.exception("session event subscriber failed on %s", kind)
        return event
