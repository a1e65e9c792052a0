"""The microphone: a PortAudio input stream whose callback copies each block to the sink.

The callback runs on PortAudio's real-time thread, so it only copies (downmixing to
mono in the same step when the device opened with several channels), stamps the block
with its ADC capture time and hands it on: no I/O, no logging, no locks, no allocation
beyond the one output array. Everything else (noticing a failure, closing the stream,
sending events) happens on the source's own thread.

Time: PortAudio stamps blocks on its own stream clock. At start the offset between
`stream.time` and time.monotonic() is measured (the tightest of a few paired readings)
and added to each block's `inputBufferAdcTime`, which puts audio on the same axis as
camera frames. Host APIs that report no ADC time (0) get "now minus the block's
duration" instead.

Faults: `start()` raises CaptureError naming the device (PortAudio missing, no such
name or several, a rate or channel count the device refuses). After start, LOST is sent
when the stream finishes on its own (the device vanished, PortAudio aborted it, or the
sink raised inside the callback) or no block arrives for `stall_timeout_s`.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

import numpy as np

from app.capture import portaudio
from app.capture.base import CaptureError, ThreadedSource
from app.capture.devices import AudioDeviceInfo, resolve_input_device
from app.capture.sinks import AudioSink, EventCallback, SourceEventKind


class MicrophoneSource(ThreadedSource):
    """One microphone, by index, by (part of its) name, or None for the default."""

    def __init__(
        self,
        sink: AudioSink,
        device: int | str | None = None,
        *,
        sample_rate: int | None = None,
        block_ms: float = 20.0,
        latency: str | float = "low",
        on_event: EventCallback | None = None,
        stall_timeout_s: float = 2.0,
        first_block_timeout_s: float = 5.0,
        stop_timeout_s: float = 1.0,
        open_timeout_s: float = 10.0,
        name: str = "microphone",
    ) -> None:
        super().__init__(name, on_event, stop_timeout_s, open_timeout_s)
        if sample_rate is not None and sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {sample_rate}")
        if not block_ms > 0:
            raise ValueError(f"block_ms must be positive, not {block_ms}")
        self.device = device
        self.requested_rate = sample_rate
        self.block_ms = block_ms
        self.latency = latency
        self.stall_timeout_s = stall_timeout_s
        self.first_block_timeout_s = first_block_timeout_s
        self._sink = sink
        self._sd: ModuleType | None = None
        self._stream: Any = None
        self._finished = threading.Event()
        self._callback_error: BaseException | None = None
        self._abort_exc: type[BaseException] = Exception
        self._clock_offset: float | None = None
        self._last_block = 0.0
        self.device_info: AudioDeviceInfo | None = None
        self.sample_rate = 0
        self.channels = 0
        self._gain = np.float32(1.0)
        self.blocks = 0
        self.samples = 0
        self.overflows = 0

    # ---------------------------------------------------------------- PortAudio thread

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        try:
            if status and status.input_overflow:
                self.overflows += 1
            if self.channels == 1:
                block = indata[:, 0].copy()
            else:
                block = indata.sum(axis=1, dtype=np.float32)
                block *= self._gain
            adc = time_info.inputBufferAdcTime
            offset = self._clock_offset
            if offset is not None and adc > 0:
                capture_time = adc + offset
            else:
                capture_time = time.monotonic() - frames / self.sample_rate
            self._sink.push_audio(block, self.sample_rate, capture_time)
            self.blocks += 1
            self.samples += frames
            self._last_block = time.monotonic()
        except Exception as exc:
            # Leave the explaining to the source thread; tell PortAudio to abort.
            self._callback_error = exc
            raise self._abort_exc from None

    def _on_finished(self) -> None:
        self._finished.set()

    # ------------------------------------------------------------------- source thread

    def _measure_clock_offset(self) -> float | None:
        """time.monotonic() minus the stream clock, from the tightest of a few readings."""
        best: tuple[float, float] | None = None
        for _ in range(5):
            before = time.monotonic()
            stream_time = float(self._stream.time)
            after = time.monotonic()
            if stream_time <= 0:
                return None  # this host API keeps no stream clock
            if best is None or after - before < best[0]:
                best = (after - before, (before + after) / 2 - stream_time)
        return best[1] if best else None

    def _open_stream(self, sd: ModuleType, info: AudioDeviceInfo, blocksize: int) -> None:
        # Mono first; some devices (many USB and built-in arrays) only open in stereo
        # or more, and then the callback downmixes.
        errors = []
        for channels in dict.fromkeys((1, min(2, info.channels), info.channels)):
            try:
                self._stream = sd.InputStream(
                    device=info.index,
                    samplerate=self.sample_rate,
                    channels=channels,
                    dtype="float32",
                    blocksize=blocksize,
                    latency=self.latency,
                    callback=self._callback,
                    finished_callback=self._on_finished,
                )
            except (sd.PortAudioError, ValueError) as exc:
                errors.append(f"{channels} ch: {exc}")
                continue
            self.channels = channels
            self._gain = np.float32(1.0 / channels)
            return
        raise CaptureError(
            f"microphone {info.describe()} would not open at {self.sample_rate} Hz "
            f"({'; '.join(errors)})"
        )

    def _open(self) -> str:
        try:
            sd = portaudio.load_sounddevice()
        except portaudio.AudioUnavailable as exc:
            raise CaptureError(f"cannot open a microphone: {exc}") from exc
        self._sd = sd
        self._abort_exc = sd.CallbackAbort
        info = resolve_input_device(self.device, sd)
        self.device_info = info
        self.sample_rate = self.requested_rate or round(info.rate)
        if self.sample_rate <= 0:
            raise CaptureError(f"microphone {info.describe()} reports no sample rate; ask one")
        blocksize = max(1, round(self.sample_rate * self.block_ms / 1000.0))
        self._open_stream(sd, info, blocksize)
        self._clock_offset = self._measure_clock_offset()
        self._last_block = time.monotonic()
        try:
            self._stream.start()
        except sd.PortAudioError as exc:
            raise CaptureError(f"microphone {info.describe()} would not start: {exc}") from exc
        return f"microphone {info.describe()}: {self.sample_rate} Hz, {self.channels} ch"

    def _run(self) -> None:
        assert self.device_info is not None
        what = f"microphone {self.device_info.describe()}"
        poll = min(0.05, self.stall_timeout_s / 4)
        while not self._stop.wait(poll):
            if self._finished.is_set():
                error = self._callback_error
                if error is not None:
                    why = f"capture failed inside the audio callback ({error})"
                else:
                    why = "the audio stream ended by itself (unplugged, or taken away?)"
                self._life.finish(SourceEventKind.LOST, f"{what}: {why}")
                return
            limit = self.stall_timeout_s if self.blocks else self.first_block_timeout_s
            silent = time.monotonic() - self._last_block
            if silent > limit:
                self._life.finish(
                    SourceEventKind.LOST,
                    f"{what} stopped sending audio (none for {silent:.1f} s): was it unplugged?",
                )
                return

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
        finally:
            stream.close()
