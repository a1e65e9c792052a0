"""Small media files for tests, made on the spot: video whose frames say their own number,
WAV/FLAC whose samples can be checked one by one.

Video frames (BGR as opencv writes them, so RGB after capture):

* top half: 8 vertical stripes, stripe k white if bit k of the frame number is set
  (frame numbers 0..255), robust to MJPG's losses;
* bottom half: a pure red left half and a pure blue right half, so a reader can tell
  RGB from BGR and a mirrored frame from a straight one.

Also recorders that stand in for the timeline (FrameSink, AudioSink) and for an event
listener. Import as `import media` (pytest puts tests/ on the path).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

BITS = 8


def frame_for(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """The BGR frame number `index` (0..255) that `write_video` writes."""
    if not 0 <= index < 2**BITS:
        raise ValueError(f"frame numbers go up to {2**BITS - 1}")
    if width % BITS or height % 2:
        raise ValueError("width must be a multiple of 8 and height even")
    frame = np.zeros((height, width, 3), np.uint8)
    stripe = width // BITS
    for bit in range(BITS):
        if index >> bit & 1:
            frame[: height // 2, bit * stripe : (bit + 1) * stripe] = 255
    frame[height // 2 :, : width // 2] = (0, 0, 255)  # BGR red
    frame[height // 2 :, width // 2 :] = (255, 0, 0)  # BGR blue
    return frame


def write_video(
    path: Path, frames: int, fps: float = 20.0, width: int = 64, height: int = 48
) -> Path:
    """An MJPG .avi of `frames` frames, frame i drawn by `frame_for(i)`."""
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height)
    )
    if not writer.isOpened():
        raise RuntimeError(f"opencv cannot write MJPG to {path}")
    try:
        for index in range(frames):
            writer.write(frame_for(index, width, height))
    finally:
        writer.release()
    return path


def frame_index(rgb: np.ndarray, mirrored: bool = False) -> int:
    """Read back the number of an RGB frame written by `write_video`."""
    if mirrored:
        rgb = rgb[:, ::-1]
    height, width = rgb.shape[:2]
    stripe = width // BITS
    top = rgb[: height // 2].astype(np.float32).mean(axis=(0, 2))
    value = 0
    for bit in range(BITS):
        # The middle of each stripe, away from JPEG's ringing at the edges.
        middle = top[bit * stripe + 1 : (bit + 1) * stripe - 1].mean()
        if middle > 127:
            value |= 1 << bit
    return value


def colors_are_rgb(rgb: np.ndarray, mirrored: bool = False) -> bool:
    """True if the bottom half reads red on the left and blue on the right (RGB order)."""
    if mirrored:
        rgb = rgb[:, ::-1]
    height, width = rgb.shape[:2]
    left = rgb[height // 2 + 2 :, 2 : width // 2 - 2].reshape(-1, 3).mean(axis=0)
    right = rgb[height // 2 + 2 :, width // 2 + 2 : -2].reshape(-1, 3).mean(axis=0)
    return bool(left[0] > 180 > left[2] + 100 and right[2] > 180 > right[0] + 100)


def noise_signal(frames: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """float32 (frames, channels) in [-0.5, 0.5]: noise, so any reordering shows."""
    rng = np.random.default_rng(seed)
    return (rng.random((frames, channels), dtype=np.float32) - 0.5).astype(np.float32)


def write_audio(
    path: Path,
    seconds: float,
    sample_rate: int = 16000,
    channels: int = 1,
    subtype: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Write a WAV/FLAC (format from the suffix) and return the mono signal a reader
    should get back: the file's own decoded samples, averaged over channels.

    WAV defaults to 32-bit float (exact); FLAC is 16-bit, so the expected signal is read
    back from the file rather than assumed.
    """
    frames = round(seconds * sample_rate)
    signal = noise_signal(frames, channels, seed)
    if subtype is None:
        subtype = "FLOAT" if path.suffix.lower() == ".wav" else "PCM_16"
    sf.write(str(path), signal, sample_rate, subtype=subtype)
    decoded, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return decoded.mean(axis=1, dtype=np.float32)


class FrameRecorder:
    """A FrameSink that keeps every frame with its capture time and arrival time."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def push_frame(self, pixels: np.ndarray, capture_time: float) -> None:
        with self._lock:
            self.frames.append(pixels)
            self.times.append(capture_time)
            self.arrivals.append(time.monotonic())

    def __len__(self) -> int:
        return len(self.frames)


class AudioRecorder:
    """An AudioSink that keeps copies of every block, its rate and capture time."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.rates: list[int] = []
        self.times: list[float | None] = []
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def push_audio(
        self, samples: np.ndarray, sample_rate: int, capture_time: float | None = None
    ) -> None:
        with self._lock:
            self.blocks.append(np.array(samples, copy=True))
            self.rates.append(sample_rate)
            self.times.append(capture_time)
            self.arrivals.append(time.monotonic())

    @property
    def samples(self) -> np.ndarray:
        with self._lock:
            if not self.blocks:
                return np.zeros(0, np.float32)
            return np.concatenate(self.blocks)


class EventRecorder:
    """An event callback that keeps events and lets a test wait for one kind."""

    def __init__(self) -> None:
        self.events: list = []
        self._changed = threading.Condition()

    def __call__(self, event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    @property
    def kinds(self) -> list[str]:
        return [str(e.kind) for e in self.events]

    def wait_for(self, kind: str, timeout_s: float = 5.0):
        """The first event of `kind`, waiting up to `timeout_s`; None if it never came."""
        with self._changed:
            self._changed.wait_for(
                lambda: any(str(e.kind) == kind for e in self.events), timeout_s
            )
            return next((e for e in self.events if str(e.kind) == kind), None)
