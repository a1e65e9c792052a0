"""Device listing never raises: no sound card, no PortAudio, no camera, a hanging camera
driver all give empty lists (or what was found) and a reason in words."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

import pytest

from app.capture import devices, portaudio
from app.capture.devices import (
    AudioDeviceInfo,
    CameraInfo,
    list_audio_devices,
    list_cameras,
    resolve_input_device,
)

pytestmark = pytest.mark.timeout(30)


class ListingSoundDevice:
    def __init__(self, devices_: list[dict], default=(0, 1)) -> None:
        self._devices = devices_
        self.default = SimpleNamespace(device=list(default))

    def query_devices(self):
        return [dict(d, index=i) for i, d in enumerate(self._devices)]

    def query_hostapis(self):
        return [{"name": "ALSA"}, {"name": "JACK"}]


def _dev(name, inputs, outputs, rate, hostapi=0):
    return dict(
        name=name, hostapi=hostapi, max_input_channels=inputs, max_output_channels=outputs,
        default_samplerate=rate,
    )  # fmt: skip


def test_listing_on_this_machine_never_raises():
    inputs, outputs, reason = list_audio_devices()
    if not inputs or not outputs:
        assert reason
    cameras = list_cameras(timeout_s=2.0)
    assert isinstance(cameras.cameras, tuple)
    if not cameras.cameras:
        assert cameras.reason


def test_audio_devices_split_into_inputs_and_outputs(monkeypatch):
    sd = ListingSoundDevice(
        [
            _dev("Built-in Audio", 2, 2, 48000.0),
            _dev("HDMI", 0, 8, 44100.0),
            _dev("USB Mic", 1, 0, 16000.0, hostapi=1),
        ],
        default=(2, 1),
    )
    monkeypatch.setattr(portaudio, "load_sounddevice", lambda: sd)
    listing = list_audio_devices()
    assert listing.reason == ""
    assert listing.inputs == (
        AudioDeviceInfo(0, "Built-in Audio", 2, 48000.0, "ALSA", False),
        AudioDeviceInfo(2, "USB Mic", 1, 16000.0, "JACK", True),
    )
    assert [(d.index, d.channels, d.rate, d.is_default) for d in listing.outputs] == [
        (0, 2, 48000.0, False),
        (1, 8, 44100.0, True),
    ]
    assert resolve_input_device(None, sd).name == "USB Mic"
    assert resolve_input_device("2", sd).index == 2
    assert resolve_input_device("built-in audio", sd).index == 0


def test_no_devices_gives_reason(monkeypatch):
    monkeypatch.setattr(portaudio, "load_sounddevice", lambda: ListingSoundDevice([], (-1, -1)))
    inputs, outputs, reason = list_audio_devices()
    assert inputs == () and outputs == ()
    assert "found no audio devices" in reason


def test_only_outputs_says_which_direction_is_missing(monkeypatch):
    sd = ListingSoundDevice([_dev("HDMI", 0, 2, 48000.0)], (-1, 0))
    monkeypatch.setattr(portaudio, "load_sounddevice", lambda: sd)
    listing = list_audio_devices()
    assert listing.inputs == () and len(listing.outputs) == 1
    assert listing.reason.startswith("no audio input device")


def test_missing_portaudio_gives_reason(monkeypatch):
    def missing():
        raise portaudio.AudioUnavailable("PortAudio is not installed (x); install libportaudio2")

    monkeypatch.setattr(portaudio, "load_sounddevice", missing)
    listing = list_audio_devices()
    assert listing.inputs == () and "libportaudio2" in listing.reason


def test_loader_turns_the_import_oserror_into_a_hint(monkeypatch):
    # What `import sounddevice` does when libportaudio2 is missing.
    class NoPortAudio:
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")
            return None

    monkeypatch.setattr(portaudio, "_module", None)
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    with pytest.raises(portaudio.AudioUnavailable, match="PortAudio is not installed") as info:
        portaudio.load_sounddevice()
    if sys.platform.startswith("linux"):
        assert "libportaudio2" in str(info.value)


def test_portaudio_failing_to_list_gives_reason(monkeypatch):
    class Broken(ListingSoundDevice):
        def query_devices(self):
            raise RuntimeError("Error querying device -1")

    monkeypatch.setattr(portaudio, "load_sounddevice", lambda: Broken([]))
    listing = list_audio_devices()
    assert listing.inputs == () and "Error querying device" in listing.reason


class ProbeCapture:
    def __init__(self, opened: bool, size=(640, 480), fps=30.0) -> None:
        self.opened, self.size, self.fps = opened, size, fps
        self.released = False

    def isOpened(self):
        return self.opened

    def get(self, prop):
        return {3: self.size[0], 4: self.size[1], 5: self.fps}[prop]

    def getBackendName(self):
        return "FAKE"

    def release(self):
        self.released = True


def test_cameras_found_with_their_default_mode():
    made: dict[int, ProbeCapture] = {}

    def opener(index):
        made[index] = ProbeCapture(index in (0, 2), size=(1280, 720) if index == 2 else (640, 480))
        return made[index]

    listing = list_cameras(indices=[0, 1, 2], open_capture=opener)
    assert listing.cameras == (
        CameraInfo(0, 640, 480, 30.0, "FAKE"),
        CameraInfo(2, 1280, 720, 30.0, "FAKE"),
    )
    assert listing.reason == ""
    assert all(cap.released for cap in made.values())  # probing leaves no camera open


def test_hanging_camera_driver_ends_the_search_with_a_reason():
    gate = threading.Event()

    def opener(index):
        if index == 1:
            gate.wait(5)
        return ProbeCapture(True)

    listing = list_cameras(indices=[0, 1, 2], timeout_s=0.2, open_capture=opener)
    gate.set()
    assert [c.index for c in listing.cameras] == [0]
    assert "camera #1 did not answer within 0.2 s" in listing.reason


def test_a_driver_that_throws_is_a_camera_that_did_not_open():
    def opener(index):
        raise RuntimeError("driver exploded")

    listing = list_cameras(indices=[0], open_capture=opener)
    assert listing.cameras == () and "no camera opened (tried #0)" in listing.reason


def test_probing_a_missing_camera_prints_nothing(capfd):
    listing = list_cameras(indices=[63], timeout_s=2.0)
    assert listing.cameras == ()
    captured = capfd.readouterr()
    assert "WARN" not in captured.err and "WARN" not in captured.out


def test_linux_video_nodes_are_read_from_dev(tmp_path):
    for name in ("video0", "video2", "video10", "videodev", "vbi0"):
        (tmp_path / name).touch()
    assert devices._linux_video_indices(tmp_path) == [0, 2, 10]
