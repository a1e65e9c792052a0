"""A microphone or camera lost mid-conversation comes back by itself once it is there
again, and the conversation goes on meanwhile (device_keeper.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile
from listening_backend import ListeningBackend as _Listener

from app.bench.virtual_devices import VirtualCamera, VirtualSoundCard
from app.capture import camera as camera_module
from app.capture import portaudio
from app.capture.base import CaptureError
from app.capture.sinks import SourceEvent, SourceEventKind
from app.flow.conversation import ConversationOptions, build_session
from app.flow.device_keeper import RESTORED, DeviceKeeper
from app.flow.events import EventKind
from app.model.contract import ModelSource, Persona

pytestmark = pytest.mark.timeout(60)


class _Source:
    """A source that runs until told it was lost."""

    def __init__(self, name: str = "microphone") -> None:
        self.name = name
        self.started = self.stopped = False
        self.end_event: SourceEvent | None = None

    def start(self) -> None:
        self.started = True

    def stop(self, timeout_s: float | None = None) -> bool:
        self.stopped = True
        return True

    def lose(self) -> None:
        self.end_event = SourceEvent(self.name, SourceEventKind.LOST, "unplugged")


def _wait(predicate, timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_a_lost_device_is_tried_again_until_it_opens_and_the_stand_in_fills_the_gap():
    made: list[_Source] = []
    away = {"tries": 0}

    def factory() -> _Source:
        if made and away["tries"] < 2:  # absent for the first two tries after the loss
            away["tries"] += 1
            raise CaptureError("no microphone found")
        made.append(_Source())
        return made[-1]

    stand_ins: list[_Source] = []
    news: list[tuple[str, str, str]] = []
    keeper = DeviceKeeper("microphone", factory, lambda *n: news.append(n),
                          stand_in=lambda: stand_ins.append(_Source("silence")) or stand_ins[-1],
                          retry_s=0.05, max_retry_s=0.1, poll_s=0.01)
    keeper.start()
    try:
        assert made[0].started and keeper.running
        made[0].lose()
        assert _wait(lambda: keeper.away)
        assert _wait(lambda: stand_ins and stand_ins[0].started), "nothing stood in"
        assert _wait(lambda: len(made) == 2 and keeper.running), "it was not opened again"
        assert away["tries"] == 2
        assert made[0].stopped  # the lost one was released
        assert stand_ins[0].stopped  # and the stand-in made way for the device
        assert [kind for _, kind, _ in news] == [RESTORED]
        assert "is back" in news[0][2]
    finally:
        keeper.stop()
    assert made[1].stopped


def test_a_device_switched_off_while_away_is_not_tried_again():
    made: list[_Source] = []
    keeper = DeviceKeeper("camera", lambda: made.append(_Source("camera")) or made[-1],
                          lambda *n: None, retry_s=0.05, poll_s=0.01)
    keeper.start()
    try:
        made[0].lose()
        assert _wait(lambda: keeper.away)
        keeper.switch(False)
        time.sleep(0.3)
        assert len(made) == 1 and not keeper.running
    finally:
        keeper.stop()


def test_a_file_is_not_opened_again():
    made: list[_Source] = []
    keeper = DeviceKeeper("camera", lambda: made.append(_Source("clip.avi")) or made[-1],
                          lambda *n: None, reopen=False, retry_s=0.05, poll_s=0.01)
    keeper.start()
    try:
        made[0].lose()
        time.sleep(0.3)
        assert len(made) == 1 and not keeper.away
    finally:
        keeper.stop()


# ----------------------------------------------------------------------- a whole session


def _units(events, after: float) -> list:
    return [e for e in events if e.kind is EventKind.UNIT and e.t > after]


def _device_news(events, kind: str) -> list:
    return [e for e in events if e.kind is EventKind.DEVICE and e.data["kind"] == kind]


def test_a_microphone_unplugged_mid_conversation_comes_back(monkeypatch, tmp_path):
    tone = (0.2 * np.sin(np.arange(16000 * 4) * 0.05)).astype(np.float32)
    card = VirtualSoundCard(tone, 16000)
    monkeypatch.setattr(portaudio, "load_sounddevice", lambda: card)
    options = ConversationOptions(model=ModelSource(local_dir=tmp_path), persona=Persona("t", "."),
                                  mic=None, speaker="null", record_dir=tmp_path / "rec")
    session = build_session(_Listener(), options)
    events: list = []
    session.subscribe(events.append)
    started = time.monotonic()
    session.start()
    try:
        time.sleep(1.2)
        card.unplug()
        assert _wait(lambda: _device_news(events, "lost"), 3.0), "the loss was not noticed"
        lost_at = _device_news(events, "lost")[0].t
        time.sleep(1.6)
        # Away, the conversation still moves on (silence stands in for the microphone).
        assert len(_units(events, lost_at)) >= 2, "the conversation stopped with the mic"
        card.plug_in()
        assert _wait(lambda: _device_news(events, RESTORED), 6.0), "the mic did not come back"
        back_at = _device_news(events, RESTORED)[0].t
        time.sleep(1.2)
        assert _units(events, back_at), "nothing reached the model after the mic came back"
    finally:
        session.stop()
        wall = time.monotonic() - started
    audio, rate = soundfile.read(next((tmp_path / "rec").rglob("conversation.wav")))
    assert len(audio) / rate > wall - 1.5, "the recording stopped while the mic was away"
    # The user's channel holds the tone after the mic came back.
    after = audio[int((back_at + 0.3) * rate):, 0]
    assert np.sqrt(np.mean(after**2)) > 0.05


def test_a_camera_unplugged_mid_conversation_comes_back(monkeypatch, tmp_path):
    cam = VirtualCamera(fps=20)
    monkeypatch.setattr(camera_module, "_open_with_opencv", cam.open)
    mic = tmp_path / "room.wav"
    soundfile.write(mic, np.zeros(16000 * 20, np.float32), 16000)
    options = ConversationOptions(model=ModelSource(local_dir=tmp_path), persona=Persona("t", "."),
                                  mic=mic, camera=0, loop_files=True, speaker="null")
    session = build_session(_Listener(), options)
    events: list = []
    session.subscribe(events.append)
    session.start()
    try:
        time.sleep(1.0)
        cam.unplug()
        assert _wait(lambda: _device_news(events, "lost"), 5.0), "the loss was not noticed"
        time.sleep(0.5)
        cam.plug_in()
        assert _wait(lambda: _device_news(events, RESTORED), 6.0), "the camera did not come back"
        back_at = _device_news(events, RESTORED)[0].t
        time.sleep(1.5)
        assert any(e.data["frames"] for e in _units(events, back_at + 0.5)), \
            "no pictures after the camera came back"
    finally:
        session.stop()
    assert not [t for t in threading.enumerate() if t.name.endswith("-keeper")]
