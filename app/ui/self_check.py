"""The self-check runs on any machine: where a device is missing, a file stands in for it.

A machine without a sound card (a server, a VM, CI) has no default microphone or
speaker, and PortAudio's "default device" is then -1: opening it failed with "Error
querying device -1". The self-check (a tiny random model) is meant to prove that the
app works end to end here, so instead of failing it uses:

* a recorded voice (app/assets/self-check/speech.flac, two short questions with pauses,
  made with espeak-ng) replayed in a loop as the microphone;
* a generated video as the camera (a moving scene with readable text, so a preview
  shown the wrong way round is obvious);
* a null speaker: the answer is played in real time to nowhere, and shown as subtitles.

Real devices are used wherever they exist, and a device or file the user chose is never
replaced. No Qt here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

from app import paths
from app.capture import devices
from app.capture.sources import names_a_file
from app.flow.conversation import NULL_SPEAKER, ConversationOptions

SPEECH_CLIP = Path("self-check") / "speech.flac"
VIDEO_NAME = "self-check-camera-16x9.avi"  # a new name when the picture changes


def speech_clip() -> Path:
    return paths.assets_dir() / SPEECH_CLIP


def write_video(path: Path, seconds: float = 8.0, fps: int = 10,
                width: int = 384, height: int = 216) -> Path:
    """A small looping scene, as wide as the stage (16:9, so little is cropped): a lit
    wall, a face that sways a little, and the words SELF-CHECK beside it, which read
    forwards when the preview is the right way round."""
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.avi")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"MJPG"), fps,
                             (width, height))
    if not writer.isOpened():
        raise OSError(f"opencv cannot write a video to {partial}")
    y = np.linspace(0, 1, height)[:, None, None]
    wall = (np.array([70, 90, 120]) + 60 * (1 - y)).astype(np.uint8)  # BGR, lit from above
    try:
        for i in range(int(seconds * fps)):
            frame = np.broadcast_to(wall, (height, width, 3)).copy()
            sway = int(10 * math.sin(2 * math.pi * i / (seconds * fps)))
            cx, cy = int(width * 0.62) + sway, height // 2 + 6
            cv2.ellipse(frame, (cx, height + 24), (80, 64), 0, 180, 360, (90, 60, 45), -1)
            cv2.ellipse(frame, (cx, cy), (36, 46), 0, 0, 360, (130, 165, 205), -1)
            for dx in (-13, 13):
                cv2.circle(frame, (cx + dx, cy - 8), 4, (40, 40, 50), -1)
            mouth = 3 + int(4 * abs(math.sin(i * 0.9)))
            cv2.ellipse(frame, (cx, cy + 20), (11, mouth), 0, 0, 180, (60, 60, 140), -1)
            cv2.putText(frame, "SELF-CHECK", (16, height // 2 + 8), cv2.FONT_HERSHEY_SIMPLEX,
                        0.75, (240, 240, 240), 2, cv2.LINE_AA)
            writer.write(frame)
    finally:
        writer.release()
    partial.replace(path)  # whole or absent: a half-written video is never replayed
    return path


def self_check_video() -> Path:
    """The generated camera video, made once (about a second) and kept with the models."""
    path = paths.models_dir() / VIDEO_NAME
    return path if path.is_file() else write_video(path)


@dataclasses.dataclass(frozen=True)
class StandIns:
    """What the self-check replaced, in words ("microphone", "camera", "speaker")."""

    options: ConversationOptions
    replaced: tuple[str, ...]


def stand_in_for_missing_devices(
    options: ConversationOptions,
    *,
    list_audio: Callable[[], devices.AudioDevices] | None = None,
    list_cameras: Callable[[], devices.CameraList] | None = None,
    video: Callable[[], Path] = self_check_video,
) -> StandIns:
    """The self-check's options with files where this machine lacks the device."""
    list_audio = list_audio or devices.list_audio_devices
    list_cameras = list_cameras or devices.list_cameras
    replaced: list[str] = []
    changes: dict[str, object] = {}
    wants_devices = [spec for spec in (options.mic, options.speaker)
                     if not names_a_file(spec) and str(spec) != NULL_SPEAKER]
    audio = list_audio() if wants_devices else None
    if audio is not None and not names_a_file(options.mic) and not audio.inputs:
        changes["mic"] = speech_clip()
        replaced.append("microphone")
    if (audio is not None and not audio.outputs and not names_a_file(options.speaker)
            and str(options.speaker) != NULL_SPEAKER):
        changes["speaker"] = NULL_SPEAKER
        replaced.append("speaker")
    camera = options.camera if options.camera is not None else options.standby_camera
    if camera is not None and not names_a_file(camera) and not list_cameras().cameras:
        clip = video()
        changes["standby_camera"] = clip
        if options.camera is not None:
            changes["camera"] = clip
        replaced.append("camera")
    if not changes:
        return StandIns(options, ())
    changes["loop_files"] = True  # the stand-ins repeat for as long as the check runs
    return StandIns(dataclasses.replace(options, **changes), tuple(replaced))
