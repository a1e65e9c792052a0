"""Microphone and camera sources on fake devices: normal capture, and every way a device
can fail mid-session ending in one LOST event and a clean stop, never a hang, while the
other source carries on.

The fakes behave like the real libraries where it matters: the sounddevice fake calls
the callback from its own thread with (indata (frames, channels) float32, frames, a
time struct, status flags), honours CallbackAbort/CallbackStop, and calls the
finished_callback when the stream ends for any reason; its stream clock is offset from
time.monotonic() by 1000 s so the mapping is tested. The VideoCapture double returns
frames, then fails or blocks on cue.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import media
import numpy as np
import pytest

from app.capture import portaudio
from app.capture.base import CaptureError
from app.capture.camera import CameraSource
from app.capture.microphone import MicrophoneSource
from app.flow.virtual_output import StreamTime

pytestmark = pytest.mark.timeout(30)

STREAM_CLOCK_OFFSET = 1000.0  # fake stream.time = time.monotonic() + this
INPUT_LATENCY = 0.030


# ------------------------------------------------------------------ fake sounddevice


class FakePortAudioError(Exception):
    pass


class FakeCallbackStop(Exception):
    pass


class FakeCallbackAbort(Exception):
    pass


class FakeFlags:
    def __init__(self, input_overflow: bool = False) -> None:
        self.input_overflow = input_overflow

    def __bool__(self) -> bool:
        return self.input_overflow


class FakeStream:
    """Delivers blocks of a running sample counter (channel c adds c) every block period.

    `fault`: None, "vanish" (the stream ends by itself after `fault_after` blocks, as
    PortAudio does when a device is unplugged), "stall" (callbacks simply stop), or
    "raise" (the callback thread hits an error that is not ours: PortAudio aborts).
    """

    def __init__(self, sd: FakeSoundDevice, **kw: Any) -> None:
        self.sd = sd
        self.kw = kw
        self.device = kw["device"]
        self.samplerate = kw["samplerate"]
        self.channels = kw["channels"]
        self.blocksize = kw["blocksize"]
        self.callback = kw["callback"]
        self.finished_callback = kw["finished_callback"]
        self.closed = False
        self.started = False
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0  # samples sent per channel
        self.adc_times: list[float] = []
        self.finished_calls = 0

    @property
    def time(self) -> float:
        return time.monotonic() + STREAM_CLOCK_OFFSET

    def start(self) -> None:
        if self.sd.start_error:
            raise FakePortAudioError(self.sd.start_error)
        self.started = True
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        frames = self.blocksize
        period = frames / self.samplerate / self.sd.speed
        blocks = 0
        try:
            while not self._halt.wait(period):
                if self.sd.fault and blocks >= self.sd.fault_after:
                    if self.sd.fault == "stall":
                        self._halt.wait()  # the device went quiet; nobody calls back
                        return
                    if self.sd.fault == "raise":
                        raise RuntimeError("host error")
                    return  # "vanish": PortAudio completes the stream
                counter = np.arange(self.sent, self.sent + frames, dtype=np.float32) * 1e-6
                indata = counter[:, None] + np.arange(self.channels, dtype=np.float32)[None, :]
                # The block's first sample reached the ADC a block plus the input
                # latency ago: a mapping that ignored ADC times would be 30 ms off.
                adc = self.time - frames / self.samplerate - INPUT_LATENCY
                self.adc_times.append(adc)
                info = StreamTime(
                    currentTime=self.time, outputBufferDacTime=0.0, inputBufferAdcTime=adc
                )
                overflow = blocks == 2  # one overflow flag early on, as real devices do
                try:
                    self.callback(indata, frames, info, FakeFlags(overflow))
                except (FakeCallbackStop, FakeCallbackAbort):
                    return
                self.sent += frames
                blocks += 1
        except RuntimeError:
            return
        finally:
            # PortAudio calls it whenever the stream becomes inactive, whatever the cause.
            self.finished_calls += 1
            self.finished_callback()

    def _halt_thread(self) -> None:
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2)

    def abort(self, ignore_errors: bool = True) -> None:
        self._halt_thread()

    def stop(self, ignore_errors: bool = True) -> None:
        self._halt_thread()

    def close(self, ignore_errors: bool = True) -> None:
        self._halt_thread()
        self.closed = True


class FakeSoundDevice:
    """Stands in for the sounddevice module (what MicrophoneSource and listing use)."""

    PortAudioError = FakePortAudioError
    CallbackStop = FakeCallbackStop
    CallbackAbort = FakeCallbackAbort

    def __init__(self, devices: list[dict], default: tuple[int, int] = (0, 1)) -> None:
        self.devices = devices
        self.default = SimpleNamespace(device=list(default))
        self.streams: list[FakeStream] = []
        self.fault: str | None = None
        self.fault_after = 0
        self.start_error = ""
        self.speed = 1.0  # >1 delivers blocks faster than real time

    def query_devices(self) -> list[dict]:
        return [dict(d, index=i) for i, d in enumerate(self.devices)]

    def query_hostapis(self) -> list[dict]:
        return [{"name": "FakeAPI"}]

    def InputStream(self, **kw: Any) -> FakeStream:
        dev = self.devices[kw["device"]]
        if kw["channels"] not in dev.get("opens_with", {1, 2}):
            raise FakePortAudioError("Invalid number of channels [PaErrorCode -9998]")
        if kw["samplerate"] not in dev.get("rates", {8000, 16000, 44100, 48000}):
            raise FakePortAudioError("Invalid sample rate [PaErrorCode -9997]")
        stream = FakeStream(self, **kw)
        self.streams.append(stream)
        return stream


def device(name: str, inputs: int = 1, outputs: int = 0, rate: float = 48000.0, **extra):
    return dict(
        name=name, hostapi=0, max_input_channels=inputs, max_output_channels=outputs,
        default_samplerate=rate, **extra,
    )  # fmt: skip


@pytest.fixture
def fake_sd(monkeypatch) -> FakeSoundDevice:
    sd = FakeSoundDevice(
        [
            device("Built-in Microphone", inputs=1, rate=44100.0, opens_with={1}),
            device("Speakers", inputs=0, outputs=2),
            device("USB Headset Mic", inputs=2, rate=16000.0, opens_with={2}),
            device("USB Webcam Mic", inputs=4, rate=48000.0, opens_with={1, 2, 4}),
        ]
    )
    monkeypatch.setattr(portaudio, "load_sounddevice", lambda: sd)
    return sd


def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def fast_mic(sink, device=None, **kw) -> MicrophoneSource:
    kw.setdefault("block_ms", 10)
    kw.setdefault("stall_timeout_s", 0.3)
    kw.setdefault("first_block_timeout_s", 0.5)
    return MicrophoneSource(sink, device, **kw)


# -------------------------------------------------------------------------- microphone


def test_mic_delivers_every_sample_once_stamped_on_the_monotonic_clock(fake_sd):
    sink, events = media.AudioRecorder(), media.EventRecorder()
    mic = fast_mic(sink, on_event=events)
    mic.start()
    assert wait_until(lambda: len(sink.blocks) >= 10)
    assert mic.stop()

    stream = fake_sd.streams[0]
    assert stream.closed
    assert events.kinds == ["started", "stopped"]
    assert "Built-in Microphone" in events.events[0].message
    # The device's native default rate, since none was asked; mono as it opens.
    assert set(sink.rates) == {44100}
    assert stream.channels == 1 and stream.blocksize == 441
    got = sink.samples
    np.testing.assert_array_equal(got, np.arange(len(got), dtype=np.float32) * 1e-6)
    # ADC times moved from the stream's clock onto time.monotonic()'s axis.
    adc_on_monotonic = np.array(stream.adc_times[: len(sink.times)]) - STREAM_CLOCK_OFFSET
    np.testing.assert_allclose(sink.times, adc_on_monotonic, atol=2e-3)
    assert mic.overflows == 1


def test_mic_that_opens_only_in_stereo_is_downmixed(fake_sd):
    sink = media.AudioRecorder()
    mic = fast_mic(sink, "headset")
    mic.start()
    assert wait_until(lambda: len(sink.blocks) >= 3)
    mic.stop()
    assert mic.channels == 2
    assert set(sink.rates) == {16000}
    got = sink.samples
    # Channel c carries counter + c; the mono mix is counter + 0.5.
    expected = np.arange(len(got), dtype=np.float32) * 1e-6 + np.float32(0.5)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_mic_asked_rate_and_index(fake_sd):
    sink = media.AudioRecorder()
    mic = fast_mic(sink, 3, sample_rate=16000)
    mic.start()
    assert wait_until(lambda: len(sink.blocks) >= 2)
    mic.stop()
    assert set(sink.rates) == {16000}
    assert mic.channels == 1  # the 4-channel webcam mic also opens in mono
    assert fake_sd.streams[0].device == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("usb", r"matches 2 devices: #2 USB Headset Mic \[FakeAPI\], #3 USB Webcam Mic"),
        ("piano", r"no microphone matches 'piano' \(inputs here: #0 Built-in Microphone"),
        (1, r"audio device #1 is not a microphone"),
        (42, r"audio device #42 is not a microphone"),
    ],
)
def test_mic_names_that_match_nothing_or_several_are_clear_errors(fake_sd, spec, message):
    events = media.EventRecorder()
    with pytest.raises(CaptureError, match=message):
        fast_mic(media.AudioRecorder(), spec, on_event=events).start()
    assert events.events == []


def test_mic_rate_the_device_refuses_names_device_and_rate(fake_sd):
    with pytest.raises(CaptureError, match=r"Built-in Microphone.*12345 Hz"):
        fast_mic(media.AudioRecorder(), 0, sample_rate=12345).start()


def test_mic_without_portaudio_is_a_clear_error(monkeypatch):
    def missing():
        raise portaudio.AudioUnavailable("PortAudio is not installed (test)")

    monkeypatch.setattr(portaudio, "load_sounddevice", missing)
    with pytest.raises(CaptureError, match="PortAudio is not installed"):
        fast_mic(media.AudioRecorder()).start()


def test_mic_stream_that_will_not_start(fake_sd):
    fake_sd.start_error = "Device unavailable [PaErrorCode -9985]"
    with pytest.raises(CaptureError, match="would not start: Device unavailable"):
        fast_mic(media.AudioRecorder()).start()
    assert fake_sd.streams[0].closed


@pytest.mark.parametrize(
    ("fault", "words"),
    [("vanish", "ended by itself"), ("raise", "ended by itself"), ("stall", "stopped sending")],
)
def test_mic_failing_mid_stream_is_lost_and_closed(fake_sd, fault, words):
    fake_sd.fault, fake_sd.fault_after = fault, 5
    sink, events = media.AudioRecorder(), media.EventRecorder()
    mic = fast_mic(sink, on_event=events)
    mic.start()
    lost = events.wait_for("lost", 5)
    assert lost is not None, events.kinds
    assert words in lost.message and "Built-in Microphone" in lost.message
    assert mic.wait(1)
    assert not mic.running
    assert wait_until(lambda: fake_sd.streams[0].closed, 2)
    assert mic.stop(0.5)  # after LOST, stop is quick and sends nothing more
    assert events.kinds == ["started", "lost"]
    assert len(sink.blocks) == 5


def test_sink_failing_inside_the_callback_aborts_the_stream_without_a_crash(fake_sd):
    class BrokenSink:
        def push_audio(self, samples, sample_rate, capture_time=None):
            raise ValueError("timeline is full")

    events = media.EventRecorder()
    mic = fast_mic(BrokenSink(), on_event=events)
    mic.start()
    lost = events.wait_for("lost", 5)
    assert lost is not None
    assert "timeline is full" in lost.message
    assert wait_until(lambda: fake_sd.streams[0].closed, 2)


def test_event_listener_that_raises_does_not_break_capture(fake_sd):
    def bad_listener(event):
        raise RuntimeError("UI bug")

    sink = media.AudioRecorder()
    mic = fast_mic(sink, on_event=bad_listener)
    mic.start()
    assert wait_until(lambda: len(sink.blocks) >= 3)
    assert mic.stop()


# ------------------------------------------------------------------------------ camera


class FakeCapture:
    """A cv2.VideoCapture double: `good` frames at `fps`, then fails or blocks."""

    def __init__(
        self, good: int = 10_000, then: str = "fail", fps: float = 100.0, opened: bool = True
    ) -> None:
        self.good = good
        self.then = then
        self.fps = fps
        self.opened = opened
        self.reads = 0
        self.released = threading.Event()
        self.unblock = threading.Event()
        self.settings: dict[int, float] = {}

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.settings[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.settings.get(prop, {3: 64.0, 4: 48.0, 5: self.fps}.get(prop, 0.0))

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(1 / self.fps)
        if self.reads >= self.good:
            if self.then == "block":
                self.unblock.wait()  # a driver stuck in read(), until the test ends
            return False, None
        frame = media.frame_for(self.reads % 256)
        self.reads += 1
        return True, frame

    def release(self) -> None:
        self.released.set()


def camera(cap: FakeCapture, sink, **kw) -> CameraSource:
    kw.setdefault("lost_after_s", 0.3)
    kw.setdefault("first_frame_timeout_s", 0.5)
    kw.setdefault("stop_timeout_s", 0.3)
    return CameraSource(sink, 0, open_capture=lambda device: cap, **kw)


def test_camera_delivers_rgb_frames_in_order_with_mirrored_preview():
    cap = FakeCapture()
    sink, events, previews = media.FrameRecorder(), media.EventRecorder(), []
    cam = camera(cap, sink, width=64, height=48, fps=30, preview=previews.append, on_event=events)
    began = time.monotonic()
    cam.start()
    assert wait_until(lambda: len(sink) >= 10)
    assert cam.stop()
    assert cap.released.is_set()
    assert events.kinds == ["started", "stopped"]
    assert "camera #0: 64×48" in events.events[0].message
    assert cap.settings == {3: 64, 4: 48, 5: 30}  # the request reached the driver
    n = len(sink)
    assert [media.frame_index(f) for f in sink.frames] == list(range(n))
    assert all(media.colors_are_rgb(f) for f in sink.frames)
    assert [media.frame_index(p, mirrored=True) for p in previews] == list(range(n))
    assert all(media.colors_are_rgb(p, mirrored=True) for p in previews)
    times = np.array(sink.times)
    assert np.all(np.diff(times) > 0)
    assert began <= times[0] <= time.monotonic()


def test_camera_that_cannot_open_raises_naming_it():
    events = media.EventRecorder()
    cam = CameraSource(
        media.FrameRecorder(), 3, open_capture=lambda d: FakeCapture(opened=False),
        on_event=events,
    )  # fmt: skip
    with pytest.raises(CaptureError, match=r"camera #3 could not be opened"):
        cam.start()
    assert events.events == []


def test_camera_whose_open_hangs_does_not_hang_start():
    gate = threading.Event()

    def hanging_open(device):
        gate.wait(5)
        return FakeCapture()

    cam = CameraSource(media.FrameRecorder(), 0, open_capture=hanging_open, open_timeout_s=0.2)
    began = time.monotonic()
    with pytest.raises(CaptureError, match=r"did not open within 0\.2 s"):
        cam.start()
    assert time.monotonic() - began < 1
    gate.set()


def test_camera_given_a_video_file_points_to_the_file_source(tmp_path):
    clip = media.write_video(tmp_path / "clip.avi", 2)
    with pytest.raises(CaptureError, match="FileVideoSource"):
        CameraSource(media.FrameRecorder(), str(clip))


def test_camera_whose_reads_start_failing_is_lost_and_released():
    cap = FakeCapture(good=5, then="fail")
    sink, events = media.FrameRecorder(), media.EventRecorder()
    cam = camera(cap, sink, on_event=events)
    cam.start()
    lost = events.wait_for("lost", 5)
    assert lost is not None, events.kinds
    assert "camera #0 stopped sending frames (reads fail" in lost.message
    assert cap.released.wait(1)
    assert cam.wait(0.1) and not cam.running
    assert not cam._thread.is_alive()
    assert len(sink) == 5
    assert events.kinds == ["started", "lost"]


def test_stuck_camera_is_lost_while_the_mic_carries_on(fake_sd):
    cap = FakeCapture(good=5, then="block")
    frames, cam_events = media.FrameRecorder(), media.EventRecorder()
    audio, mic_events = media.AudioRecorder(), media.EventRecorder()
    mic = fast_mic(audio, on_event=mic_events)
    cam = camera(cap, frames, on_event=cam_events)
    mic.start()
    cam.start()

    lost = cam_events.wait_for("lost", 5)
    assert lost is not None, cam_events.kinds
    assert "a read is stuck in the driver" in lost.message
    assert "left behind" in lost.message
    assert not cam.running
    # The microphone keeps delivering after the camera is gone.
    blocks_at_loss = len(audio.blocks)
    assert wait_until(lambda: len(audio.blocks) >= blocks_at_loss + 5, 2)
    assert mic.running and mic_events.kinds == ["started"]

    # If the driver ever returns, the abandoned thread ends and releases the camera.
    cap.unblock.set()
    assert cap.released.wait(2)
    assert wait_until(lambda: not cam._thread.is_alive(), 2)
    assert mic.stop()
    assert mic_events.kinds == ["started", "stopped"]
    assert len(frames) == 5


def test_stop_while_a_read_is_stuck_returns_within_its_bound():
    cap = FakeCapture(good=3, then="block")
    events = media.EventRecorder()
    cam = camera(cap, media.FrameRecorder(), on_event=events, lost_after_s=30)
    cam.start()
    assert wait_until(lambda: cap.reads >= 3)
    time.sleep(0.05)
    began = time.monotonic()
    assert cam.stop(0.2) is False  # the thread could not end: said, not hidden
    assert time.monotonic() - began < 0.6
    assert events.kinds == ["started", "stopped"]
    assert "left behind" in events.events[-1].message
    cap.unblock.set()
    assert cap.released.wait(2)


def test_frame_sink_failure_ends_only_the_camera():
    class BrokenSink:
        def push_frame(self, pixels, capture_time):
            raise RuntimeError("no room")

    events = media.EventRecorder()
    cap = FakeCapture()
    cam = camera(cap, BrokenSink(), on_event=events)
    cam.start()
    lost = events.wait_for("lost", 5)
    assert lost is not None and "no room" in lost.message
    assert cap.released.wait(1)


def test_preview_failure_does_not_stop_capture():
    def broken_preview(frame):
        raise RuntimeError("widget deleted")

    sink = media.FrameRecorder()
    cam = camera(FakeCapture(), sink, preview=broken_preview)
    cam.start()
    assert wait_until(lambda: len(sink) >= 5)
    assert cam.running
    assert cam.stop()
