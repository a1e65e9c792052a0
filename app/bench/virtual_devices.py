"""A microphone and a camera that exist only in this process, and can be unplugged.

Fakes of the two edges the fault rows cannot have on a machine without devices: they
stand in for the `sounddevice` module (the part the app uses: listing, InputStream)
and for `cv2.VideoCapture`, so the app's own MicrophoneSource and CameraSource run on
them unchanged. `unplug()` behaves as pulling a USB cable does: the open stream ends by
itself (PortAudio completes it) or every read fails, and the device leaves the listing;
`plug_in()` lists it again, and only a newly opened handle works (an old one stays dead).

The microphone "hears" a recording in real time, in a loop, restarting at each plug-in
(the user speaks again once their microphone is back).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from app.flow.virtual_output import StreamTime


class VirtualPortAudioError(Exception):
    pass


class VirtualCallbackStop(Exception):
    pass


class VirtualCallbackAbort(Exception):
    pass


class _Flags:
    input_overflow = False

    def __bool__(self) -> bool:
        return False


class VirtualInputStream:
    def __init__(self, card: VirtualSoundCard, generation: int, **kw: Any) -> None:
        self.card = card
        self.generation = generation
        self.samplerate = kw["samplerate"]
        self.channels = kw["channels"]
        self.blocksize = kw["blocksize"] or self.samplerate // 50
        self.callback = kw["callback"]
        self.finished_callback = kw.get("finished_callback")
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def time(self) -> float:
        return time.monotonic()

    def start(self) -> None:
        if not self.card.plugged_in(self.generation):
            raise VirtualPortAudioError("Device unavailable [PaErrorCode -9985]")
        self._thread = threading.Thread(target=self._pump, name="virtual-mic", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        frames = self.blocksize
        period = frames / self.samplerate
        origin = time.monotonic()
        sent = 0
        try:
            while not self._halt.is_set():
                # Like a sound card's clock: each block is stamped when its first sample
                # was captured, even when this thread is late to hand it over (a busy
                # machine), so lateness never reads as lost audio.
                adc = origin + sent / self.samplerate
                delay = adc + period - time.monotonic()
                if delay > 0 and self._halt.wait(delay):
                    return
                if not self.card.plugged_in(self.generation):
                    return  # unplugged: PortAudio completes the stream
                block = self.card.hear(frames)
                indata = np.repeat(block[:, None], self.channels, axis=1)
                sent += frames
                info = StreamTime(currentTime=time.monotonic(), outputBufferDacTime=0.0,
                                  inputBufferAdcTime=adc)
                try:
                    self.callback(indata, frames, info, _Flags())
                except (VirtualCallbackStop, VirtualCallbackAbort):
                    return
        finally:
            if self.finished_callback is not None:
                self.finished_callback()

    def _halt_thread(self) -> None:
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def abort(self, ignore_errors: bool = True) -> None:
        self._halt_thread()

    def stop(self, ignore_errors: bool = True) -> None:
        self._halt_thread()

    def close(self, ignore_errors: bool = True) -> None:
        self._halt_thread()


class VirtualSoundCard:
    """Stands in for the sounddevice module: one USB microphone at `rate`, mono."""

    PortAudioError = VirtualPortAudioError
    CallbackStop = VirtualCallbackStop
    CallbackAbort = VirtualCallbackAbort
    NAME = "Virtual USB Microphone (a fake: no sound card here)"

    def __init__(self, voice: np.ndarray, rate: int = 16000) -> None:
        self.voice = np.asarray(voice, dtype=np.float32)
        self.rate = rate
        self.default = SimpleNamespace(device=[0, -1])
        self._lock = threading.Lock()
        self._generation = 0
        self._plugged = True
        self._cursor = 0
        self.streams: list[VirtualInputStream] = []

    # ---------------------------------------------------------------- the cable
    def unplug(self) -> None:
        with self._lock:
            self._plugged = False

    def plug_in(self) -> None:
        with self._lock:
            self._plugged = True
            self._generation += 1
            self._cursor = 0

    def plugged_in(self, generation: int) -> bool:
        with self._lock:
            return self._plugged and generation == self._generation

    def hear(self, frames: int) -> np.ndarray:
        """The next `frames` samples of the looped recording."""
        with self._lock:
            n = len(self.voice)
            idx = (np.arange(self._cursor, self._cursor + frames) % n) if n else None
            self._cursor += frames
        return self.voice[idx] if idx is not None else np.zeros(frames, np.float32)

    # ---------------------------------------------------------------- sounddevice
    def query_devices(self, device: Any = None, kind: str | None = None) -> Any:
        with self._lock:
            plugged = self._plugged
        listed = [{"name": self.NAME, "index": 0, "hostapi": 0, "max_input_channels": 1,
                   "max_output_channels": 0, "default_samplerate": float(self.rate)}]
        devices = listed if plugged else []
        if device is not None or kind is not None:
            if not devices or kind == "output":
                raise VirtualPortAudioError("No such device")
            return devices[0]
        return devices

    def query_hostapis(self) -> list[dict]:
        return [{"name": "Virtual"}]

    def InputStream(self, **kw: Any) -> VirtualInputStream:
        with self._lock:
            generation, plugged = self._generation, self._plugged
        if not plugged:
            raise VirtualPortAudioError("Device unavailable [PaErrorCode -9985]")
        if kw["samplerate"] != self.rate:
            raise VirtualPortAudioError("Invalid sample rate [PaErrorCode -9997]")
        stream = VirtualInputStream(self, generation, **kw)
        self.streams.append(stream)
        return stream


class VirtualCapture:
    """One open handle of the virtual camera (shaped like cv2.VideoCapture)."""

    def __init__(self, camera: VirtualCamera, generation: int, opened: bool) -> None:
        self.camera = camera
        self.generation = generation
        self._opened = opened
        self._next_at = time.monotonic()

    def isOpened(self) -> bool:
        return self._opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        self._next_at += 1.0 / self.camera.fps
        delay = self._next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if not self._opened or not self.camera.plugged_in(self.generation):
            return False, None
        return True, self.camera.frame()

    def set(self, prop: int, value: float) -> bool:
        return False

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: self.camera.width,
                cv2.CAP_PROP_FRAME_HEIGHT: self.camera.height,
                cv2.CAP_PROP_FPS: self.camera.fps}.get(prop, 0.0)

    def release(self) -> None:
        self._opened = False


class VirtualCamera:
    """A webcam at `fps` showing a moving square; `open` replaces cv2.VideoCapture."""

    def __init__(self, width: int = 160, height: int = 120, fps: float = 15.0) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._lock = threading.Lock()
        self._plugged = True
        self._generation = 0
        self._count = 0
        self.opened = 0

    def unplug(self) -> None:
        with self._lock:
            self._plugged = False

    def plug_in(self) -> None:
        with self._lock:
            self._plugged = True
            self._generation += 1

    def plugged_in(self, generation: int) -> bool:
        with self._lock:
            return self._plugged and generation == self._generation

    def open(self, device: int | str) -> VirtualCapture:
        with self._lock:
            self.opened += 1
            return VirtualCapture(self, self._generation, self._plugged)

    def listing(self, *_args: Any, **_kwargs: Any) -> Any:
        """What the camera listing finds: this camera at index 0 while plugged in."""
        from app.capture.devices import CameraInfo, CameraList

        with self._lock:
            plugged = self._plugged
        if not plugged:
            return CameraList((), "no camera found (the virtual camera is unplugged)")
        return CameraList((CameraInfo(0, self.width, self.height, self.fps, "virtual"),), "")

    def frame(self) -> np.ndarray:
        self._count += 1
        image = np.full((self.height, self.width, 3), 40, np.uint8)
        x = (self._count * 5) % (self.width - 20)
        image[self.height // 3 : self.height // 3 + 20, x : x + 20] = (30, 200, 240)
        return image


@contextlib.contextmanager
def installed(card: VirtualSoundCard | None = None, camera: VirtualCamera | None = None
              ) -> Iterator[None]:
    """Meanwhile the app finds `card` where PortAudio would be and `camera` where OpenCV
    opens and lists cameras (file sources still read real files)."""
    from app.capture import camera as camera_module
    from app.capture import devices, portaudio

    swaps: list[tuple[Any, str, Any]] = []
    if card is not None:
        swaps.append((portaudio, "load_sounddevice", lambda: card))
    if camera is not None:
        swaps.append((camera_module, "_open_with_opencv", camera.open))
        swaps.append((devices, "list_cameras", camera.listing))
    old = [(owner, name, getattr(owner, name)) for owner, name, _ in swaps]
    for owner, name, value in swaps:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in old:
            setattr(owner, name, value)
