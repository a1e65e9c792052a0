"""File sources: a video file and a WAV/FLAC replayed as if they were camera and mic.

They push into the same sinks, send the same events and stop the same way as the
devices, so tests, benchmarks and users without a camera run the same code. Pacing
comes from a `ReplayClock` (app/capture/replay.py): real time, or as fast as possible
on a virtual clock starting at 0.0; give the audio and video sources of one session
the same clock so they line up.

At the end of a file (unless `loop`) a source sends STOPPED with the message
"end of file". A file that cannot be used raises CaptureError at start, in one sentence
naming it and what is wrong (missing, a folder, empty, not media, no audio or no frames);
one that turns out damaged midway sends LOST. `check_audio_file` and `check_video_file`
make the same checks without starting anything, so a command line can refuse a bad file
before a model spends seconds loading.

What can be made to work is: any sample rate the timeline resamples (4 kHz and up), any
channel count (averaged to mono), and float samples that are not numbers (NaN, infinite):
those are played as silence and counted (`AudioFileInfo.nonfinite`, a warning), because
one NaN reaching a model turns all its later output into NaN.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile as sf

from app.capture.base import CaptureError, ThreadedSource
from app.capture.camera import FrameDelivery, PreviewCallback
from app.capture.replay import ReplayClock
from app.capture.sinks import AudioSink, EventCallback, FrameSink, SourceEventKind

log = logging.getLogger(__name__)

END_OF_FILE = "end of file"
# What the session's resampler takes (app/flow/resample.py's range; capture sits below
# flow and cannot import it).
MIN_AUDIO_RATE = 4_000
MAX_AUDIO_RATE = 384_000
# Float formats are the only ones that can hold NaN or infinity.
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
_SCAN_FRAMES = 1 << 16

# A file that reports no usable frame rate is assumed to run at this one.
_FALLBACK_FPS = 30.0


def _existing_file(path: str | Path, kind: str) -> Path:
    path = Path(path).expanduser()
    try:
        exists, is_file = path.exists(), path.is_file()
        size = path.stat().st_size if is_file else 0
    except (OSError, ValueError) as exc:  # a NUL in the name, a permission error
        raise CaptureError(f"{kind} file {path} cannot be opened: {exc}") from None
    if not exists:
        raise CaptureError(f"{kind} file not found: {path}")
    if not is_file:
        raise CaptureError(f"{kind} file {path} is a folder or device, not a file")
    if size == 0:
        raise CaptureError(f"{kind} file {path} is empty (0 bytes)")
    return path


@dataclass(frozen=True)
class AudioFileInfo:
    """What `check_audio_file` found: a file a FileAudioSource will play."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    nonfinite: int = 0  # NaN or infinite samples, played as silence

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def warnings(self) -> list[str]:
        if not self.nonfinite:
            return []
        return [f"audio file {self.path}: {self.nonfinite} samples are not numbers (NaN "
                "or infinite); they are played as silence"]

    def describe(self) -> str:
        text = (f"audio file {self.path.name}: {self.sample_rate} Hz, {self.channels} ch, "
                f"{self.seconds:.2f} s")
        return text + (f", {self.nonfinite} NaN/infinite samples silenced"
                       if self.nonfinite else "")


def _count_nonfinite(handle: sf.SoundFile) -> int:
    """Samples that are NaN or infinite, read through in blocks (float files only)."""
    count = 0
    handle.seek(0)
    while True:
        block = handle.read(_SCAN_FRAMES, dtype="float32", always_2d=True)
        if not len(block):
            break
        count += int(block.size - np.count_nonzero(np.isfinite(block)))
    handle.seek(0)
    return count


def _open_audio(path: Path) -> tuple[sf.SoundFile, AudioFileInfo]:
    """Open and check an audio file; CaptureError in one sentence if it cannot play."""
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise CaptureError(f"cannot read audio file {path}: it is not audio that "
                           f"libsndfile reads (WAV, FLAC, OGG, MP3): {exc}") from exc
    try:
        rate, channels, frames = int(handle.samplerate), int(handle.channels), handle.frames
        if not MIN_AUDIO_RATE <= rate <= MAX_AUDIO_RATE:
            raise CaptureError(f"audio file {path} runs at {rate} Hz; Duetto takes "
                               f"{MIN_AUDIO_RATE} to {MAX_AUDIO_RATE} Hz")
        if frames <= 0:
            raise CaptureError(f"audio file {path} holds no audio (0 samples)")
        try:
            bad = _count_nonfinite(handle) if handle.subtype in _FLOAT_SUBTYPES else 0
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise CaptureError(f"audio file {path} is damaged: {exc}") from exc
    except BaseException:
        handle.close()
        raise
    return handle, AudioFileInfo(path, rate, channels, frames, bad)


def check_audio_file(path: str | Path) -> AudioFileInfo:
    """Whether `path` can be replayed as a microphone, without starting anything.

    Returns what it holds (with `warnings()` for what will be repaired on the way);
    raises CaptureError, one sentence naming the file and what is wrong, if it cannot.
    Reads the whole file only when it holds float samples (to count NaN and infinity).
    """
    handle, info = _open_audio(_existing_file(path, "audio"))
    handle.close()
    return info


@dataclass(frozen=True)
class VideoFileInfo:
    """What `check_video_file` found: a file a FileVideoSource will play."""

    path: Path
    width: int
    height: int
    fps: float

    def warnings(self) -> list[str]:
        return []  # a video that decodes at all plays as it is

    def describe(self) -> str:
        return f"video file {self.path.name}: {self.width}×{self.height} at {self.fps:g} fps"


def _open_video(path: Path) -> Any:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise CaptureError(
            f"cannot read video file {path} (not a video, or a format opencv lacks)"
        )
    return cap


def check_video_file(path: str | Path) -> VideoFileInfo:
    """Whether `path` can be replayed as a camera: it opens and its first frame decodes.

    Raises CaptureError, one sentence naming the file and what is wrong, if not.
    """
    path = _existing_file(path, "video")
    cap = _open_video(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise CaptureError(f"video file {path} holds no frames that opencv can decode")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        height, width = frame.shape[:2]
    finally:
        cap.release()
    return VideoFileInfo(path, width, height,
                         fps if math.isfinite(fps) and 0 < fps < 1000 else _FALLBACK_FPS)


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
        return _open_video(self.path)

    def _open(self) -> str:
        info = check_video_file(self.path)  # a file with no frame fails here, not later
        self._cap = self._open_capture()
        self.fps = info.fps
        return info.describe()

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
        self.nonfinite_silenced = 0  # NaN or infinite samples replaced by silence

    def _open(self) -> str:
        self._file, info = _open_audio(_existing_file(self.path, "audio"))
        self.sample_rate = info.sample_rate
        self.channels = info.channels
        for warning in info.warnings():
            log.warning("%s", warning)
        return info.describe()

    def _read_mono(self, frames: int) -> np.ndarray:
        assert self._file is not None
        try:
            block = self._file.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise _Damaged(str(exc)) from exc
        mono = block.reshape(-1) if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
        finite = np.isfinite(mono)
        if not finite.all():
            # read() made a fresh array: repair it in place.
            self.nonfinite_silenced += int(mono.size - np.count_nonzero(finite))
            mono[~finite] = 0.0
        return mono

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
