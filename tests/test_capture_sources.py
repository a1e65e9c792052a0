"""What a user types for --camera/--mic becomes the right source, and real devices that
are not there fail at start with the device named (this machine has none)."""

from __future__ import annotations

import media
import pytest

from app.capture.base import CaptureError
from app.capture.camera import CameraSource
from app.capture.devices import list_audio_devices, list_cameras
from app.capture.files import FileAudioSource, FileVideoSource
from app.capture.microphone import MicrophoneSource
from app.capture.replay import ReplayClock
from app.capture.sources import audio_source, video_source

pytestmark = pytest.mark.timeout(30)


def test_numbers_are_devices_and_files_are_replayed(tmp_path):
    clip = media.write_video(tmp_path / "me.avi", 3)
    media.write_audio(tmp_path / "me.wav", 0.1)
    frames, audio = media.FrameRecorder(), media.AudioRecorder()

    assert isinstance(video_source(0, frames), CameraSource)
    assert video_source("1", frames).device == 1
    assert video_source("/dev/video7", frames).device == "/dev/video7"
    assert isinstance(video_source(clip, frames), FileVideoSource)
    assert isinstance(video_source(str(clip), frames), FileVideoSource)

    assert audio_source(None, audio).device is None
    assert audio_source("2", audio).device == 2
    mic = audio_source("USB", audio)
    assert isinstance(mic, MicrophoneSource) and mic.device == "USB"
    assert isinstance(audio_source(tmp_path / "me.wav", audio), FileAudioSource)


def test_missing_media_file_is_not_mistaken_for_a_device_name(tmp_path):
    with pytest.raises(CaptureError, match="file not found"):
        audio_source(tmp_path / "typo.wav", media.AudioRecorder())
    with pytest.raises(CaptureError, match="file not found"):
        video_source(str(tmp_path / "typo.mp4"), media.FrameRecorder())


def test_files_from_the_factory_share_a_fast_clock(tmp_path):
    clip = media.write_video(tmp_path / "v.avi", 4, fps=10)
    media.write_audio(tmp_path / "a.flac", 0.4, 16000)
    clock = ReplayClock(realtime=False)
    frames, audio = media.FrameRecorder(), media.AudioRecorder()
    sources = [
        video_source(clip, frames, clock=clock),
        audio_source(tmp_path / "a.flac", audio, clock=clock),
    ]
    for source in sources:
        source.start()
    for source in sources:
        assert source.wait(5)
    assert frames.times[0] == 0.0 and audio.times[0] == 0.0
    assert len(frames) == 4 and len(audio.samples) == 6400


def test_absent_camera_fails_at_start_naming_it(capfd):
    if list_cameras(indices=[0]).cameras:
        pytest.skip("this machine has a camera #0")
    with pytest.raises(CaptureError, match=r"camera #0 could not be opened"):
        CameraSource(media.FrameRecorder(), 0).start()
    assert "WARN" not in capfd.readouterr().err


def test_absent_microphone_fails_at_start_with_a_reason():
    if list_audio_devices().inputs:
        pytest.skip("this machine has a microphone")
    with pytest.raises(CaptureError, match="microphone"):
        MicrophoneSource(media.AudioRecorder()).start()
