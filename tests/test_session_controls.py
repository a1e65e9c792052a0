"""Controls a user has mid-conversation: the camera off and on again, the mic muted."""

from __future__ import annotations

import time

import numpy as np
import soundfile
import tiny_models
from media import write_video

from app.flow.conversation import ConversationOptions, build_session, load_backend
from app.flow.events import EventKind
from app.model.contract import ModelSource, Persona

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
