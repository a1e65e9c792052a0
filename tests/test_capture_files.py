"""File sources replay video and WAV/FLAC like devices: every frame and sample once, in
order, stamped on the right clock, paced or as fast as possible, stoppable at once."""

from __future__ import annotations

import time

import media
import numpy as np
import pytest
import soundfile as sf

from app.capture.base import CaptureError
from app.capture.files import END_OF_FILE, FileAudioSource, FileVideoSource
from app.capture.replay import ReplayClock
from app.capture.sources import video_source

pytestmark = pytest.mark.timeout(30)


# ----------------------------------------------------------------------------- video


def test_video_fast_replay_delivers_every_frame_in_order_as_rgb(tmp_path):
    path = media.write_video(tmp_path / "clip.avi", frames=30, fps=20)
    sink, events, previews = media.FrameRecorder(), media.EventRecorder(), []
    source = FileVideoSource(
        path, sink, clock=ReplayClock(realtime=False), preview=previews.append,
        on_event=events,
    )  # fmt: skip
    source.start()
    assert source.wait(10)

    assert events.kinds == ["started", "stopped"]
    assert events.events[-1].message == END_OF_FILE
    assert events.events[0].source == "clip.avi"
    assert [media.frame_index(f) for f in sink.frames] == list(range(30))
    assert all(f.dtype == np.uint8 and f.shape == (48, 64, 3) for f in sink.frames)
    assert all(media.colors_are_rgb(f) for f in sink.frames)
    # Virtual clock: media time from 0.0, one frame every 1/20 s.
    np.testing.assert_allclose(sink.times, np.arange(30) / 20, atol=1e-6)
    # The preview is a copy, not the sink's array, and shows the file the right way round.
    assert len(previews) == 30
    assert [media.frame_index(p) for p in previews] == list(range(30))
    assert all(media.colors_are_rgb(p) for p in previews)
    assert previews[0] is not sink.frames[0]


def test_a_video_files_preview_is_never_mirrored(tmp_path):
    """Only a live camera is shown as a selfie view; a file's text must read forwards,
    whatever the caller asks for the camera."""
    path = media.write_video(tmp_path / "clip.avi", frames=3)
    previews: list[np.ndarray] = []
    source = video_source(path, media.FrameRecorder(), clock=ReplayClock(realtime=False),
                          preview=previews.append, mirror_preview=True)
    source.start()
    assert source.wait(5)
    assert [media.frame_index(p) for p in previews] == [0, 1, 2]
    assert all(media.colors_are_rgb(p) for p in previews)


def test_video_realtime_replay_is_paced_on_the_monotonic_clock(tmp_path):
    fps, count = 20, 10
    path = media.write_video(tmp_path / "clip.avi", frames=count, fps=fps)
    sink = media.FrameRecorder()
    source = FileVideoSource(path, sink)  # real time is the default
    began = time.monotonic()
    source.start()
    assert source.wait(10)
    elapsed = time.monotonic() - began

    assert [media.frame_index(f) for f in sink.frames] == list(range(count))
    media_span = (count - 1) / fps
    assert elapsed >= 0.8 * media_span
    times = np.array(sink.times)
    np.testing.assert_allclose(np.diff(times), 1 / fps, atol=1e-6)
    assert abs(times[0] - began) < 0.5  # on time.monotonic()'s axis
    # Never delivered before it was due.
    assert all(a >= t - 1e-3 for a, t in zip(sink.arrivals, sink.times, strict=True))


def test_stop_mid_file_returns_quickly(tmp_path):
    path = media.write_video(tmp_path / "long.avi", frames=200, fps=10)  # 20 s
    sink, events = media.FrameRecorder(), media.EventRecorder()
    source = FileVideoSource(path, sink, on_event=events)
    source.start()
    time.sleep(0.3)
    began = time.monotonic()
    assert source.stop() is True
    assert time.monotonic() - began < 0.5
    assert not source.running
    assert events.kinds == ["started", "stopped"]
    assert events.events[-1].message == "stopped"
    assert 1 <= len(sink) < 200
    assert source.stop() is True  # twice is harmless, and sends nothing more
    assert events.kinds == ["started", "stopped"]


def test_video_loop_keeps_time_running(tmp_path):
    path = media.write_video(tmp_path / "short.avi", frames=5, fps=10)
    sink = media.FrameRecorder()
    source = FileVideoSource(path, sink, clock=ReplayClock(realtime=False), loop=True)
    source.start()
    deadline = time.monotonic() + 5
    while len(sink) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    got = [media.frame_index(f) for f in sink.frames[:12]]
    assert got == [0, 1, 2, 3, 4] * 2 + [0, 1]
    np.testing.assert_allclose(sink.times[:12], np.arange(12) / 10, atol=1e-6)


def test_missing_or_unreadable_video_raises_naming_the_file(tmp_path):
    events = media.EventRecorder()
    with pytest.raises(CaptureError, match=r"not found: .*nothing\.avi"):
        FileVideoSource(tmp_path / "nothing.avi", media.FrameRecorder(), on_event=events).start()
    junk = tmp_path / "junk.avi"
    junk.write_text("this is not a video")
    with pytest.raises(CaptureError, match=r"junk\.avi"):
        FileVideoSource(junk, media.FrameRecorder(), on_event=events).start()
    assert events.events == []  # a source that never started sends nothing


# ----------------------------------------------------------------------------- audio


def test_stereo_wav_fast_replay_delivers_each_sample_once_downmixed(tmp_path):
    rate = 48000
    expected = media.write_audio(tmp_path / "talk.wav", 0.5, rate, channels=2)
    sink, events = media.AudioRecorder(), media.EventRecorder()
    source = FileAudioSource(
        tmp_path / "talk.wav", sink, clock=ReplayClock(realtime=False), on_event=events
    )
    source.start()
    assert source.wait(10)

    assert events.kinds == ["started", "stopped"]
    assert events.events[-1].message == END_OF_FILE
    assert set(sink.rates) == {rate}
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in sink.blocks)
    np.testing.assert_array_equal(sink.samples, expected)
    # Each block is stamped with the media time of its first sample.
    starts = np.concatenate([[0], np.cumsum([len(b) for b in sink.blocks])[:-1]])
    np.testing.assert_allclose(sink.times, starts / rate, atol=1e-9)
    assert source.samples_delivered == len(expected)


@pytest.mark.parametrize(("rate", "channels"), [(22050, 1), (44100, 6)])
def test_flac_at_any_rate_and_channel_count(tmp_path, rate, channels):
    path = tmp_path / "voice.flac"
    expected = media.write_audio(path, 0.3, rate, channels=channels)
    sink = media.AudioRecorder()
    source = FileAudioSource(path, sink, clock=ReplayClock(realtime=False), block_ms=7)
    source.start()
    assert source.wait(10)
    assert source.channels == channels
    assert set(sink.rates) == {rate}
    np.testing.assert_allclose(sink.samples, expected, atol=1e-6)
    assert len(sink.samples) == len(expected)


def test_audio_realtime_replay_is_paced(tmp_path):
    rate, seconds = 16000, 0.5
    expected = media.write_audio(tmp_path / "a.wav", seconds, rate)
    sink = media.AudioRecorder()
    source = FileAudioSource(tmp_path / "a.wav", sink)
    began = time.monotonic()
    source.start()
    assert source.wait(10)
    elapsed = time.monotonic() - began
    assert elapsed >= 0.8 * seconds
    np.testing.assert_array_equal(sink.samples, expected)
    times = np.array(sink.times)
    lengths = np.array([len(b) for b in sink.blocks])
    np.testing.assert_allclose(np.diff(times), lengths[:-1] / rate, atol=1e-6)
    assert abs(times[0] - began) < 0.5


def test_audio_and_video_on_one_clock_share_an_origin(tmp_path):
    video = media.write_video(tmp_path / "v.avi", frames=6, fps=10)
    media.write_audio(tmp_path / "a.wav", 0.6, 16000)
    clock = ReplayClock(realtime=True)
    frames, audio = media.FrameRecorder(), media.AudioRecorder()
    sources = [
        FileVideoSource(video, frames, clock=clock),
        FileAudioSource(tmp_path / "a.wav", audio, clock=clock),
    ]
    for source in sources:
        source.start()
    for source in sources:
        assert source.wait(10)
    assert frames.times[0] == pytest.approx(audio.times[0], abs=1e-9)
    assert frames.times[-1] - frames.times[0] == pytest.approx(0.5, abs=1e-6)


def test_audio_loop_repeats_the_file_seamlessly(tmp_path):
    rate = 8000
    expected = media.write_audio(tmp_path / "loop.wav", 0.1, rate)
    sink = media.AudioRecorder()
    source = FileAudioSource(
        tmp_path / "loop.wav", sink, clock=ReplayClock(realtime=False), loop=True
    )
    source.start()
    deadline = time.monotonic() + 5
    while len(sink.samples) < 3 * len(expected) and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    got = sink.samples
    assert len(got) >= 3 * len(expected)
    np.testing.assert_array_equal(got[: 3 * len(expected)], np.tile(expected, 3))
    lengths = np.array([len(b) for b in sink.blocks])
    np.testing.assert_allclose(sink.times, np.concatenate([[0], np.cumsum(lengths)[:-1]]) / rate)


def test_audio_stop_mid_file_is_quick(tmp_path):
    media.write_audio(tmp_path / "long.wav", 20.0, 8000)
    sink, events = media.AudioRecorder(), media.EventRecorder()
    source = FileAudioSource(tmp_path / "long.wav", sink, on_event=events)
    source.start()
    time.sleep(0.2)
    began = time.monotonic()
    assert source.stop()
    assert time.monotonic() - began < 0.5
    assert events.kinds == ["started", "stopped"]
    assert 0 < len(sink.samples) < 20 * 8000


def test_bad_audio_files_give_clear_errors(tmp_path):
    with pytest.raises(CaptureError, match="audio file not found"):
        FileAudioSource(tmp_path / "gone.wav", media.AudioRecorder()).start()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF but not really a wave file")
    with pytest.raises(CaptureError, match=r"cannot read audio file .*junk\.wav"):
        FileAudioSource(junk, media.AudioRecorder()).start()
    with pytest.raises(ValueError, match="block_ms"):
        FileAudioSource(junk, media.AudioRecorder(), block_ms=0)


def test_an_audio_file_without_samples_fails_at_start_naming_it(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros((0, 1), np.float32), 16000)
    events = media.EventRecorder()
    with pytest.raises(CaptureError, match=r"empty\.wav holds no audio \(0 samples\)"):
        FileAudioSource(path, media.AudioRecorder(), on_event=events).start()
    assert events.kinds == []  # it never started
