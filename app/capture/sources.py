"""From what a user typed (`--camera 0`, `--camera clip.mp4`, `--mic "USB"`) to a source.

A number is a device index; an existing file is replayed by a file source; anything
else is a camera device path or URL, or a part of a microphone's name. A name that
looks like a media file but does not exist is reported as a missing file, not as an
unknown device.

`check_inputs` says, before anything opens (and before a model loads), whether the
files given as microphone and camera can be played; devices are checked when they open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.capture.base import CaptureError
from app.capture.camera import CameraSource, PreviewCallback
from app.capture.files import (
    AudioFileInfo,
    FileAudioSource,
    FileVideoSource,
    VideoFileInfo,
    check_audio_file,
    check_video_file,
)
from app.capture.microphone import MicrophoneSource
from app.capture.replay import ReplayClock
from app.capture.sinks import AudioSink, EventCallback, FrameSink

MEDIA_SUFFIXES = {
    ".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v",
    ".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3",
}  # fmt: skip


def _as_index(spec: int | str | Path) -> int | None:
    if isinstance(spec, bool):
        return None
    if isinstance(spec, int):
        return spec
    text = str(spec).strip()
    return int(text) if text.isdigit() else None


def names_a_file(spec: int | str | Path | None) -> bool:
    """Whether `spec` means a file (an existing one, or a media file name), not a device."""
    if spec is None or isinstance(spec, bool | int) or _as_index(spec) is not None:
        return False
    path = Path(spec).expanduser()
    return path.is_file() or path.suffix.lower() in MEDIA_SUFFIXES


def _file_or_none(spec: int | str | Path) -> Path | None:
    if isinstance(spec, int):
        return None
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.suffix.lower() in MEDIA_SUFFIXES:
        if path.exists():
            raise CaptureError(f"{path} is a folder or device, not a media file")
        raise CaptureError(f"file not found: {path}")
    return None


def video_source(
    spec: int | str | Path,
    sink: FrameSink,
    *,
    clock: ReplayClock | None = None,
    loop: bool = False,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    preview: PreviewCallback | None = None,
    mirror_preview: bool = True,
    on_event: EventCallback | None = None,
) -> CameraSource | FileVideoSource:
    """A camera (index, device path, URL) or a video file replayed on `clock`.

    `mirror_preview` applies to a live camera only (a selfie view); a file's preview is
    always shown as it was recorded.
    """
    index = _as_index(spec)
    if index is not None:
        return CameraSource(
            sink, index, width=width, height=height, fps=fps, preview=preview,
            mirror_preview=mirror_preview, on_event=on_event,
        )  # fmt: skip
    path = _file_or_none(spec)
    if path is not None:
        return FileVideoSource(
            path, sink, clock=clock, loop=loop, preview=preview, on_event=on_event,
        )  # fmt: skip
    return CameraSource(
        sink, str(spec), width=width, height=height, fps=fps, preview=preview,
        mirror_preview=mirror_preview, on_event=on_event,
    )  # fmt: skip


def audio_source(
    spec: int | str | Path | None,
    sink: AudioSink,
    *,
    clock: ReplayClock | None = None,
    loop: bool = False,
    sample_rate: int | None = None,
    on_event: EventCallback | None = None,
) -> MicrophoneSource | FileAudioSource:
    """A microphone (None: the default; an index; part of a name) or a WAV/FLAC file."""
    if spec is None:
        return MicrophoneSource(sink, None, sample_rate=sample_rate, on_event=on_event)
    index = _as_index(spec)
    if index is not None:
        return MicrophoneSource(sink, index, sample_rate=sample_rate, on_event=on_event)
    path = _file_or_none(spec)
    if path is not None:
        return FileAudioSource(path, sink, clock=clock, loop=loop, on_event=on_event)
    return MicrophoneSource(sink, str(spec), sample_rate=sample_rate, on_event=on_event)


def _meant_as_file(spec: int | str | Path) -> bool:
    """A spec that can only be a path (it names a folder, it is no URL) yet is not there."""
    text = str(spec)
    return "://" not in text and ("/" in text or "\\" in text) and not Path(text).exists()


@dataclass(frozen=True)
class InputCheck:
    """What `check_inputs` found: one sentence per input that cannot be used, and
    warnings about what will be repaired on the way (NaN samples played as silence).

    The caller decides what an error means: a bad microphone file leaves nothing to
    talk with; a bad camera file can leave a conversation without video.
    """

    mic_error: str | None = None
    camera_error: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(e for e in (self.mic_error, self.camera_error) if e)

    @property
    def ok(self) -> bool:
        return not self.errors


def _check_one(
    role: str,
    spec: int | str | Path | None,
    check: Callable[[Path], AudioFileInfo | VideoFileInfo],
    warnings: list[str],
) -> str | None:
    if spec is None or _as_index(spec) is not None:
        return None  # a device: it is checked when it opens
    try:
        path = _file_or_none(spec)
        if path is None and _meant_as_file(spec):
            raise CaptureError(f"file not found: {Path(spec).expanduser()}")
        if path is not None:
            info = check(path)
            warnings.extend(info.warnings())
    except CaptureError as exc:
        return f"The {role} input cannot be used: {exc}."
    return None


def check_inputs(
    mic: int | str | Path | None = None, camera: int | str | Path | None = None
) -> InputCheck:
    """Check the files given as microphone and camera, cheaply, before anything starts.

    `mic` and `camera` are what the user typed (as for `audio_source`/`video_source`):
    a file is opened and checked (`check_audio_file`, `check_video_file`); a device index
    or name is left for its own start. Each error is one sentence naming the file.
    """
    warnings: list[str] = []
    mic_error = _check_one("microphone", mic, check_audio_file, warnings)
    camera_error = _check_one("camera", camera, check_video_file, warnings)
    return InputCheck(mic_error, camera_error, tuple(warnings))
