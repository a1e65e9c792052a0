"""Controls a user has mid-conversation: the camera off and on again (also when it
started off, fails to open, or is still opening as the conversation ends)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile
import tiny_models
from listening_backend import ListeningBackend as _Listener
from media import write_video

from app.capture.base import CaptureError
from app.flow.conversation import ConversationOptions, build_session, load_backend
from app.flow.events import EventKind
from app.model.contract import (
    ModelSource,
    Persona,
)

qwen_tiny_factory = tiny_models.qwen_tiny_factory


def _units(events, after: float):
    return [e for e in events if e.kind is EventKind.UNIT and e.t > after]


def test_the_camera_goes_off_and_on_without_ending_the_conversation(qwen_tiny_factory, tmp_path):
    video = tmp_path / "desk.avi"
    write_video(video, frames=200, fps=20)
    mic = tmp_path / "room.wav"
    soundfile.write(mic, np.zeros(16000 * 20, np.float32), 16000)
    options = ConversationOptions(
        model=ModelSource(local_dir=qwen_tiny_factory()),
        persona=Persona("t", "Be brief."),
        mic=mic,
        camera=video,
        loop_files=True,
        speaker="null",
        unit_ms=500,
    )
    session = build_session(load_backend(options, lambda *_: None), options)
    events = []
    session.subscribe(events.append)
    session.start()
    try:
        time.sleep(2.2)
        assert any(e.data["frames"] for e in _units(events, 0.0)), "no frames reached the model"
        assert session.set_camera_enabled(False) is False
        off_at = session._now
        # Frames up to 1 s old may still fill a tick (frame_max_age), and a unit is 0.5 s.
        time.sleep(3.0)
        assert not any(e.data["frames"] for e in _units(events, off_at + 1.7))
        assert session.set_camera_enabled(True) is True
        on_at = session._now
        time.sleep(2.0)
        assert any(e.data["frames"] for e in _units(events, on_at + 0.2))
    finally:
        session.stop()
    devices = [e.data["kind"] for e in events if e.kind is EventKind.DEVICE]
    assert devices.count("started") >= 3  # mic, camera, camera again




def _options(tmp_path, **kwargs) -> ConversationOptions:
    mic = tmp_path / "room.wav"
    soundfile.write(mic, np.zeros(16000 * 20, np.float32), 16000)
    return ConversationOptions(model=ModelSource(local_dir=tmp_path), persona=Persona("t", "."),
                               mic=mic, loop_files=True, speaker="null", **kwargs)


def test_a_conversation_started_with_the_camera_off_can_switch_it_on(tmp_path):
    video = write_video(tmp_path / "desk.avi", frames=200, fps=20)
    session = build_session(_Listener(), _options(tmp_path, camera=None, standby_camera=video))
    events = []
    session.subscribe(events.append)
    session.start()
    try:
        time.sleep(1.2)
        assert _units(events, 0.0), "no unit reached the model"
        assert not any(e.data["frames"] for e in _units(events, 0.0))  # off, as started
        assert session.set_camera_enabled(True) is True
        on_at = session._now
        time.sleep(1.5)
        assert any(e.data["frames"] for e in _units(events, on_at + 0.2))
    finally:
        session.stop()


def test_a_camera_that_cannot_open_mid_conversation_stays_off_and_the_talk_goes_on(tmp_path):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    for camera in (tmp_path / "missing.avi", broken):
        session = build_session(_Listener(), _options(tmp_path, standby_camera=camera))
        events = []
        session.subscribe(events.append)
        session.start()
        try:
            time.sleep(0.6)
            for _attempt in range(2):  # nothing half-open is kept: it tries again
                with pytest.raises(CaptureError):
                    session.set_camera_enabled(True)
            failed_at = session._now
            time.sleep(1.2)
            assert _units(events, failed_at), "the conversation stopped with the camera"
        finally:
            session.stop()
        assert not any(e.kind is EventKind.ERROR for e in events)


class _SlowCamera:
    """A camera that takes as long as the test says to open."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.started = self.stopped = False

    def start(self) -> None:
        self.release.wait(5)
        self.started = True

    def stop(self, timeout_s: float | None = None) -> bool:
        self.stopped = True
        return True


def test_a_camera_still_opening_when_the_conversation_ends_is_closed(tmp_path):
    session = build_session(_Listener(), _options(tmp_path))
    release = threading.Event()
    cameras: list[_SlowCamera] = []
    session.set_video_factory(lambda: cameras.append(_SlowCamera(release)) or cameras[-1],
                              enabled=False)
    session.start()
    opener = threading.Thread(target=session.set_camera_enabled, args=(True,))
    opener.start()
    time.sleep(0.2)
    session.stop()
    release.set()  # the camera opens after the conversation ended...
    opener.join(5)
    assert cameras and cameras[0].started
    assert cameras[0].stopped  # ...and is closed at once, not left running
