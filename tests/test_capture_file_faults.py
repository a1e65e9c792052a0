"""Bad microphone and camera files: each one works (resampled, downmixed, repaired) or is
refused at once, in one sentence naming the file and what is wrong; `check_inputs` says
the same before anything starts (the command line calls it before a model loads)."""

from __future__ import annotations

import media
import numpy as np
import pytest
import soundfile as sf

from app.capture.base import CaptureError
from app.capture.files import (
    FileAudioSource,
    FileVideoSource,
    check_audio_file,
    check_video_file,
)
from app.capture.replay import ReplayClock
from app.capture.sources import check_inputs
from app.flow.timeline import Timeline

pytestmark = pytest.mark.timeout(30)


def _bad_audio(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "missing":
        pass
    elif kind == "folder":
        path.mkdir()
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "not-media":
        path.write_text("this is a note, not a recording\n" * 20)
    elif kind == "no-samples":
        sf.write(str(path), np.zeros((0, 2), np.float32), 16000)
    elif kind == "too-slow":
        sf.write(str(path), np.zeros((2000, 1), np.float32), 1000)
    return path


@pytest.mark.parametrize(("kind", "words"), [
    ("missing", "not found"),
    ("folder", "is a folder"),
    ("zero-bytes", "is empty (0 bytes)"),
    ("not-media", "is not audio"),
    ("no-samples", "holds no audio (0 samples)"),
    ("too-slow", "runs at 1000 Hz"),
])
def test_a_bad_audio_file_is_refused_in_one_sentence_naming_it(tmp_path, kind, words):
    path = _bad_audio(tmp_path, kind)
    with pytest.raises(CaptureError) as checked:
        check_audio_file(path)
    message = str(checked.value)
    assert path.name in message and words in message and "\n" not in message
    # The source refuses at start with the same sentence, and sends nothing.
    events = media.EventRecorder()
    with pytest.raises(CaptureError, match=path.name):
        FileAudioSource(path, media.AudioRecorder(), on_event=events).start()
    assert events.kinds == []
    # Before anything starts: the error the command line shows before loading a model.
    found = check_inputs(mic=str(path))
    assert not found.ok and found.camera_error is None
    assert path.name in found.mic_error and words in found.mic_error


def _bad_video(tmp_path, kind):
    path = tmp_path / f"{kind}.avi"
    if kind == "not-media":
        path = tmp_path / "clip.mp4"
        path.write_text("hello")
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "no-frames":
        media.write_video(path, 0)
    return path


@pytest.mark.parametrize(("kind", "words"), [
    ("missing", "not found"),
    ("zero-bytes", "is empty (0 bytes)"),
    ("not-media", "cannot read video file"),
    ("no-frames", "holds no frames"),
])
def test_a_bad_video_file_is_refused_in_one_sentence_naming_it(tmp_path, kind, words):
    path = _bad_video(tmp_path, kind)
    with pytest.raises(CaptureError) as checked:
        check_video_file(path)
    assert path.name in str(checked.value) and words in str(checked.value)
    events = media.EventRecorder()
    with pytest.raises(CaptureError, match=words.replace("(", r"\(").replace(")", r"\)")):
        FileVideoSource(path, media.FrameRecorder(), on_event=events).start()
    assert events.kinds == []
    found = check_inputs(camera=str(path))
    assert found.mic_error is None and path.name in found.camera_error


def test_check_inputs_passes_good_files_and_leaves_devices_to_their_start(tmp_path):
    wav = tmp_path / "talk.wav"
    media.write_audio(wav, 0.1)
    video = media.write_video(tmp_path / "clip.avi", 3)
    assert check_inputs(mic=str(wav), camera=str(video)).ok
    assert check_inputs(mic="0", camera=1).ok  # device indexes
    assert check_inputs(mic="USB headset").ok  # a part of a device's name
    # A path that is not there is a missing file, not a microphone's name.
    assert "not found" in check_inputs(mic=str(tmp_path / "nowhere" / "talk")).mic_error


def test_nan_and_infinite_samples_are_played_as_silence_with_a_warning(tmp_path):
    samples = np.full(1600, 0.25, np.float32)
    samples[100:110] = np.nan
    samples[500] = np.inf
    samples[900] = -np.inf
    path = tmp_path / "nan.wav"
    sf.write(str(path), samples, 16000, subtype="FLOAT")
    info = check_audio_file(path)
    assert info.nonfinite == 12
    assert "12 samples are not numbers" in info.warnings()[0] and "nan.wav" in info.warnings()[0]
    assert check_inputs(mic=str(path)).warnings == tuple(info.warnings())
    sink = media.AudioRecorder()
    source = FileAudioSource(path, sink, clock=ReplayClock(realtime=False))
    source.start()
    assert source.wait(10)
    got = sink.samples
    assert np.isfinite(got).all() and len(got) == 1600
    assert source.nonfinite_silenced == 12
    assert np.all(got[100:110] == 0) and got[500] == 0 and got[900] == 0
    assert np.allclose(np.delete(got, [*range(100, 110), 500, 900]), 0.25)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (48000, 6)])
def test_8_khz_and_six_channel_files_reach_the_model_rate_as_mono(tmp_path, rate, channels):
    seconds = 2.0
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    path = tmp_path / f"in_{rate}_{channels}.wav"
    sf.write(str(path), np.repeat(tone[:, None], channels, axis=1), rate)
    timeline = Timeline(0.5, 16000)
    source = FileAudioSource(path, timeline, clock=ReplayClock(realtime=False))
    source.start()
    assert source.wait(10)
    units = timeline.flush()
    audio = np.concatenate([u.audio for u in units])
    assert all(u.sample_rate == 16000 for u in units)
    assert abs(len(audio) - 16000 * seconds) <= 16000 * 0.5  # whole units of 0.5 s
    # The tone survives the trip: mono, at 440 Hz, at its level.
    middle = audio[4000:24000]
    spectrum = np.abs(np.fft.rfft(middle))
    assert abs(np.argmax(spectrum) * 16000 / len(middle) - 440) < 5
    assert abs(np.sqrt(np.mean(middle**2)) - 0.5 / np.sqrt(2)) < 0.02
