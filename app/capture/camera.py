"""A camera on its own thread, pushing RGB frames stamped with time.monotonic().

A frame is stamped when read() returns, so the stamp is late by the driver's buffering
and decode (a few ms to a frame period); the microphone, the master clock, is exact.

Faults: `start()` raises CaptureError naming the camera when it cannot be opened (or
does not open within `open_timeout_s`). After that the camera only reports: when no
frame arrives for `lost_after_s` (`first_frame_timeout_s` for the first one, since
webcams take a while to wake up) — reads failing, or one read stuck inside the driver
— a watchdog sends LOST and stops the source. A stuck read cannot be interrupted from
Python; its thread is left behind (a daemon) and releases the camera if the driver
ever returns.

Video files are replayed by `FileVideoSource` (app/capture/files.py), which paces them
on a media clock; `open_video_source` picks the right one for a user's `--camera`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.capture.base import CaptureError, ThreadedSource
from app.capture.devices import quiet_opencv
from app.capture.sinks import EventCallback, FrameSink, SourceEventKind

log = logging.getLogger(__name__)

PreviewCallback = Callable[[np.ndarray], None]
"""Receives a copy of each frame (RGB, mirrored if asked) for on-screen preview."""

OpenCapture = Callable[[int | str], Any]
"""Opens a device and returns something shaped like cv2.VideoCapture (tests pass a double)."""


def describe_camera(device: int | str) -> str:
    return f"camera #{device}" if isinstance(device, int) else f"camera {device}"


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or gray, or BGRA) frame as a new H×W×3 uint8 RGB array."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def preview_copy(rgb: np.ndarray, mirror: bool) -> np.ndarray:
    """A copy the UI may keep: mirrored left-right (like a mirror, as users expect)."""
    return np.ascontiguousarray(rgb[:, ::-1]) if mirror else rgb.copy()


class FrameDelivery:
    """Hands one captured frame to the sink and the preview; shared with FileVideoSource.

    The sink failing is a bug below us and ends the source (raised to the caller); the
    preview failing is a UI bug and is logged once, so capture carries on without it.
    """

    def __init__(
        self, sink: FrameSink, preview: PreviewCallback | None, mirror_preview: bool
    ) -> None:
        self.sink = sink
        self.preview = preview
        self.mirror_preview = mirror_preview
        self.count = 0
        self._preview_failed = False

    def deliver(self, frame: np.ndarray, capture_time: float) -> None:
        rgb = to_rgb(frame)
        self.sink.push_frame(rgb, capture_time)
        self.count += 1
        if self.preview is None:
            return
        try:
            self.preview(preview_copy(rgb, self.mirror_preview))
        except Exception:
            if not self._preview_failed:
                self._preview_failed = True
                log.exception("frame preview callback failed (further failures not logged)")


def _open_with_opencv(device: int | str) -> Any:
    with quiet_opencv():
        return cv2.VideoCapture(device)


class CameraSource(ThreadedSource):
    """One camera: a device index (0, 1, …) or a device path or stream URL."""

    def __init__(
        self,
        sink: FrameSink,
        device: int | str = 0,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        preview: PreviewCallback | None = None,
        mirror_preview: bool = True,
        on_event: EventCallback | None = None,
        lost_after_s: float = 2.0,
        first_frame_timeout_s: float = 5.0,
        open_timeout_s: float = 10.0,
        stop_timeout_s: float = 1.0,
        open_capture: OpenCapture | None = None,
        name: str = "camera",
    ) -> None:
        super().__init__(name, on_event, stop_timeout_s, open_timeout_s)
        if isinstance(device, str) and Path(device).is_file():
            raise CaptureError(
                f"{device} is a video file, not a camera: replay it with FileVideoSource "
                "(open_video_source picks the right source)"
            )
        self.device = device
        self.requested = (width, height, fps)
        self.lost_after_s = lost_after_s
        self.first_frame_timeout_s = first_frame_timeout_s
        self._delivery = FrameDelivery(sink, preview, mirror_preview)
        self._open_capture = open_capture or _open_with_opencv
        self._cap: Any = None
        self._last_progress = 0.0
        self._failed_reads = 0
        self._watchdog: threading.Thread | None = None
        self.actual_size: tuple[int, int] = (0, 0)
        self.actual_fps = 0.0

    @property
    def frames(self) -> int:
        """Frames delivered so far."""
        return self._delivery.count

    @property
    def failed_reads(self) -> int:
        return self._failed_reads

    def _open(self) -> str:
        what = describe_camera(self.device)
        self._cap = self._open_capture(self.device)
        if self._cap is None or not self._cap.isOpened():
            raise CaptureError(f"{what} could not be opened (not connected, or in use?)")
        width, height, fps = self.requested
        # A request, not a promise: the driver picks the nearest mode it has.
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        self.actual_size = (
            int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self.actual_fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        return f"{what}: {self.actual_size[0]}×{self.actual_size[1]} at {self.actual_fps:g} fps"

    def _run(self) -> None:
        self._last_progress = time.monotonic()
        self._watchdog = threading.Thread(
            target=self._watch, name=f"{self.name}-watchdog", daemon=True
        )
        self._watchdog.start()
        # Back off after a failed read so a dead device does not spin a core while the
        # watchdog waits out lost_after_s.
        retry_s = min(0.01, self.lost_after_s / 10)
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            captured = time.monotonic()
            if self._stop.is_set():
                break
            if not ok or frame is None:
                self._failed_reads += 1
                self._stop.wait(retry_s)
                continue
            self._last_progress = captured
            self._delivery.deliver(frame, captured)

    def _watch(self) -> None:
        poll = min(0.05, self.lost_after_s / 4)
        while not self._stop.wait(poll):
            limit = self.lost_after_s if self.frames else self.first_frame_timeout_s
            silent = time.monotonic() - self._last_progress
            if silent <= limit:
                continue
            how = "reads fail" if self._failed_reads else "a read is stuck in the driver"
            self._stop.set()
            ended = self._join(self.stop_timeout_s)
            tail = "" if ended else "; its thread was left behind"
            self._life.finish(
                SourceEventKind.LOST,
                f"{describe_camera(self.device)} stopped sending frames ({how}, none for "
                f"{silent:.1f} s): was it unplugged or taken by another app?{tail}",
            )
            return

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
