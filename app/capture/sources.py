"""From what a user typed (`--camera 0`, `--camera clip.mp4`, `--mic "USB"`) to a source.

A number is a device index; an existing file is replayed by a file source; anything
else is a camera device path or URL, or a part of a microphone's name. A name that
looks like a media file but does not exist is reported as a missing file, not as an
unknown device.
"""

from __future__ import annotations

from pathlib import Path

from app.capture.base import CaptureError
from app.capture.camera import CameraSource, PreviewCallback
from app.capture.files import FileAudioSource, FileVideoSource
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
