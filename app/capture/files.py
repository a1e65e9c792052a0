"""File sources: a video file and a WAV/FLAC replayed as if they were camera and mic.

They push into the same sinks, send the same events and stop the same way as the
devices, so tests, benchmarks and users without a camera run the same code. Pacing
comes from a `ReplayClock` (app/capture/replay.py): real time, or as fast as possible
on a virtual clock starting at 0.0; give the audio and video sources of one session
the same clock so they line up.

At the end of a file (unless `loop`) a source sends STOPPED with the message
"end of file". A file that cannot be read at start raises CaptureError naming it; one
that turns out damaged midway sends LOST.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from app.capture.base import CaptureError, ThreadedSource
from app.capture.camera import FrameDelivery, PreviewCallback
from app.capture.replay import ReplayClock
from app.capture.sinks import AudioSink, EventCallback, FrameSink, SourceEventKind

END_OF_FILE = "end of file"

# A file that reports no usable frame rate is assumed to run at this one.
_FALLBACK_FPS = 30.0


def _existing_file(path: str | Path, kind: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CaptureError(f"{kind} file not found: {path}")
    if not path.is_file():
        raise CaptureError(f"{kind} file {path} is not a file")
    return path


class FileVideoSource(ThreadedSource):
    """Replays a video file's frames (any format opencv reads) at their media times."""

    def __init__(
        self,
        path: str | Path,
        sink: FrameSink,
        *,
        clock: ReplayClock | None = None,
        loop: bool = False,
        preview: PreviewCallback | None = None,
        on_event: EventCallback | None = None,
        stop_timeout_s: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(name or self.path.name, on_event, stop_timeout_s)
        self.clock = clock or ReplayClock(realtime=True)
        self.loop = loop
        # Never mirrored: a file is not the user's own face, and text in it must read
        # the right way round (only a live camera is shown as a selfie view).
        self._delivery = FrameDelivery(sink, preview, mirror_preview=False)
        self._cap: Any = None
        self.fps = _FALLBACK_FPS

    @property
    def frames(self) -> int:
        return self._delivery.count

    def _open_capture(self) -> Any:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CaptureError(
                f"cannot read video file {self.path} (not a video, or a format opencv lacks)"
            )
        return cap

    def _open(self) -> str:
        _existing_file(self.path, "video")
        self._cap = self._open_capture()
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else _FALLBACK_FPS
        width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return f"video file {self.path.name}: {width}×{height} at {self.fps:g} fps"

    def _media_time(self, index: int, previous: float) -> float:
        """The frame's time in this pass: the container's if it is sane, else index/fps."""
        position = float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        if math.isfinite(position) and position >= 0 and (index == 0 or position > previous):
            return position
        return index / self.fps if index == 0 else previous + 1.0 / self.fps

    def _run(self) -> None:
        pass_offset = 0.0  # media time where the current pass (loop) began
        index = 0  # frame number within the pass
        previous = 0.0
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            if not ok or frame is None:
                if self.loop and index > 0:
                    pass_offset += previous + 1.0 / self.fps
                    index, previous = 0, 0.0
                    self._cap.release()
                    self._cap = self._open_capture()
                    continue
                if index == 0 and self.frames == 0:
                    self._life.finish(SourceEventKind.LOST, f"{self.path.name} has no frames")
                else:
                    self._life.finish(SourceEventKind.STOPPED, END_OF_FILE)
                return
            previous = self._media_time(index, previous)
            index += 1
            capture_time = self.clock.wait_until(pass_offset + previous, self._stop)
            if capture_time is None:
                return
            self._delivery.deliver(frame, capture_time)

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FileAudioSource(ThreadedSource):
    """Replays a WAV/FLAC (any rate, any channel count) as float32 mono blocks.

    Blocks keep the file's sample rate (the timeline resamples, as for a real mic).
    Paced in real time, a block is pushed once its last sample is due, as a device
    delivers it, stamped with the time of its first sample.
    """

    def __init__(
        self,
        path: str | Path,
        sink: AudioSink,
        *,
        clock: ReplayClock | None = None,
        loop: bool = False,
        block_ms: float = 20.0,
        on_event: EventCallback | None = None,
        stop_timeout_s: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(name or self.path.name, on_event, stop_timeout_s)
        if not block_ms > 0:
            raise ValueError(f"block_ms must be positive, not {block_ms}")
        self.clock = clock or ReplayClock(realtime=True)
        self.loop = loop
        self.block_ms = block_ms
        self.sink = sink
        self._file: sf.SoundFile | None = None
        self.sample_rate = 0
        self.channels = 0
        self.samples_delivered = 0

    def _open(self) -> str:
        _existing_file(self.path, "audio")
        try:
            self._file = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise CaptureError(f"cannot read audio file {self.path}: {exc}") from exc
        self.sample_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        seconds = self._file.frames / self.sample_rate if self.sample_rate else 0.0
        return (
            f"audio file {self.path.name}: {self.sample_rate} Hz, {self.channels} ch, "
            f"{seconds:.2f} s"
        )

    def _read_mono(self, frames: int) -> np.ndarray:
        assert self._file is not None
        try:
            block = self._file.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise _Damaged(str(exc)) from exc
        if block.shape[1] == 1:
            return block.reshape(-1)  # read() made a fresh array: no copy needed
        return block.mean(axis=1, dtype=np.float32)

    def _run(self) -> None:
        assert self._file is not None
        rate = self.sample_rate
        block_frames = max(1, round(rate * self.block_ms / 1000.0))
        in_pass = 0  # samples read in the current pass (loop)
        while not self._stop.is_set():
            try:
                mono = self._read_mono(block_frames)
            except _Damaged as exc:
                self._life.finish(SourceEventKind.LOST, f"{self.path.name} is damaged: {exc}")
                return
            if mono.size == 0:
                if self.loop and in_pass > 0:
                    self._file.seek(0)
                    in_pass = 0
                    continue
                kind = SourceEventKind.STOPPED if self.samples_delivered else SourceEventKind.LOST
                message = END_OF_FILE if self.samples_delivered else f"{self.path.name} is empty"
                self._life.finish(kind, message)
                return
            start = self.samples_delivered / rate
            end = (self.samples_delivered + mono.size) / rate
            if self.clock.wait_until(end, self._stop) is None:
                return
            self.sink.push_audio(mono, rate, self.clock.origin() + start)
            self.samples_delivered += mono.size
            in_pass += mono.size

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Damaged(Exception):
    pass
