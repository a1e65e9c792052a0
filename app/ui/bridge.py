"""The one object between a session and the widgets.

Session events arrive on the session's threads; each becomes a Qt signal emitted from
there, which Qt delivers to the widgets on the main thread (queued, since the bridge
and the widgets live there). Camera preview frames arrive on the camera thread: the
bridge converts the newest one to a QImage there and keeps only that one, so a slow UI
drops frames instead of queueing them, and the UI thread never waits for the camera.
Controls (stop talking, mute) go the other way through the same object.
"""

from __future__ import annotations

import threading
import unicodedata
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from app.flow.events import EventKind, SessionEvent


def printable(text: str) -> str:
    """Text fit for subtitles: control characters and unpaired bytes dropped."""
    return "".join(
        ch for ch in text
        if ch in " \n" or (unicodedata.category(ch)[0] not in ("C",) and ch != "\ufffd")
    )


def to_qimage(rgb: np.ndarray) -> QImage:
    """A QImage that owns a copy of an H×W×3 uint8 RGB frame (safe off the main thread)."""
    frame = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = frame.shape[:2]
    image = QImage(frame.data, width, height, frame.strides[0], QImage.Format.Format_RGB888)
    return image.copy()  # detach from the numpy buffer, which the camera reuses


class SessionBridge(QObject):
    state_changed = Signal(str, str)  # state, reason
    text_added = Signal(str, int)  # text as produced, response id (-1 unknown)
    spoken = Signal(str, int)  # text as its speech starts to play (subtitles), response id
    heard = Signal(str)  # after a barge-in: what the user actually heard
    retracted = Signal(int)  # an answer prepared early was dropped (-1: id not known yet)
    levels = Signal(float, float)  # mic, assistant in dBFS
    latency = Signal(str, float)  # kind, seconds
    unit_done = Signal(float, float)  # compute s, lag s
    rtf_changed = Signal(float)  # compute per second of speech, from the METRICS summary
    device_event = Signal(str, str, str)  # source, kind, message
    overflow = Signal(str)
    recording_stopped = Signal(str)  # recording could not start or stopped; why
    error = Signal(str)
    notice = Signal(str, float)  # what ("stalled", "resumed"), seconds
    ended = Signal(str, dict)  # reason, metrics summary
    frame_ready = Signal()  # a new preview frame waits in `take_frame()`

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._session: Any = None
        self._unsubscribe: Any = None
        self._frame: QImage | None = None
        self._frame_pending = False
        self.frames_seen = 0

    # ------------------------------------------------------------ wiring
    def attach(self, session: Any) -> None:
        """Listen to `session` (any thread); a previous session is let go first."""
        self.detach()
        unsubscribe = session.subscribe(self.on_event)
        with self._lock:
            self._session = session
            self._unsubscribe = unsubscribe

    def detach(self) -> None:
        with self._lock:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            self._session = None
        if unsubscribe is not None:
            unsubscribe()

    @property
    def attached(self) -> bool:
        with self._lock:
            return self._session is not None

    # ------------------------------------------------------------ controls
    def force_listen(self) -> bool:
        with self._lock:
            session = self._session
        if session is None:
            return False
        session.force_listen()
        return True

    def set_mic_muted(self, muted: bool) -> bool:
        with self._lock:
            session = self._session
        if session is None:
            return False
        session.set_mic_muted(muted)
        return True

    # ------------------------------------------------------------ camera thread
    def on_preview(self, rgb: np.ndarray) -> None:
        """The camera's preview callback: keep the newest frame, wake the UI once."""
        image = to_qimage(rgb)
        with self._lock:
            self._frame = image
            self.frames_seen += 1
            wake = not self._frame_pending
            self._frame_pending = True
        if wake:
            self.frame_ready.emit()

    def take_frame(self) -> QImage | None:
        with self._lock:
            image, self._frame = self._frame, None
            self._frame_pending = False
        return image

    # ------------------------------------------------------------ session threads
    def _report_rtf(self, summary: object) -> None:
        """The real-time factor from a metrics summary (SessionMetrics.summary()).

        The session sends one after each answer, so the figure covers whole answers; read
        mid-answer it would be one first chunk against all the thinking before it.
        """
        rtf = summary.get("real_time_factor") if isinstance(summary, dict) else None
        if isinstance(rtf, (int, float)) and not isinstance(rtf, bool) and rtf >= 0:
            self.rtf_changed.emit(float(rtf))

    def on_event(self, event: SessionEvent) -> None:
        data = event.data
        kind = event.kind
        if kind is EventKind.STATE:
            self.state_changed.emit(str(data.get("state", "")), str(data.get("reason", "")))
        elif kind is EventKind.TEXT:
            text = printable(str(data.get("text", "")))
            if text:
                response = data.get("response")
                self.text_added.emit(text, -1 if response is None else int(response))
        elif kind is EventKind.SPOKEN:
            text = printable(str(data.get("text", "")))
            if text:
                response = data.get("response")
                self.spoken.emit(text, -1 if response is None else int(response))
        elif kind is EventKind.HEARD:
            self.heard.emit(printable(str(data.get("text", ""))))
        elif kind is EventKind.LEVELS:
            self.levels.emit(float(data.get("mic", -120.0)), float(data.get("assistant", -120.0)))
        elif kind is EventKind.LATENCY:
            self.latency.emit(str(data.get("kind", "")), float(data.get("seconds", 0.0)))
        elif kind is EventKind.UNIT:
            self.unit_done.emit(float(data.get("compute", 0.0)), float(data.get("lag", 0.0)))
        elif kind is EventKind.DEVICE:
            self.device_event.emit(str(data.get("source", "")), str(data.get("kind", "")),
                                   str(data.get("message", "")))
        elif kind is EventKind.OVERFLOW:
            self.overflow.emit(str(data.get("description", "")))
        elif kind is EventKind.ERROR:
            self.error.emit(str(data.get("message", "something failed")))
        elif kind is EventKind.NOTICE:
            self.notice.emit(str(data.get("what", "")), float(data.get("seconds", 0.0)))
        elif kind is EventKind.RECORDING and not data.get("recording", True):
            # Recording could not start or stopped; the message says the talk goes on.
            self.recording_stopped.emit(str(data.get("message") or ""))
        elif kind is EventKind.PREPARED:
            if data.get("retracted"):
                response = data.get("response")
                self.retracted.emit(-1 if response is None else int(response))
        elif kind is EventKind.METRICS:
            self._report_rtf(data.get("summary"))
        elif kind is EventKind.ENDED:
            metrics = data.get("metrics")
            self._report_rtf(metrics)
            self.ended.emit(str(data.get("reason", "")), metrics if isinstance(metrics, dict)
                            else {})
