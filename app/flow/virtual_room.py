"""A room without hardware: a speaker and a microphone on one audio clock.

One thread ticks every block, as a full-duplex sound card does: it pulls the block the
player wants to play (the speaker), and pushes to the timeline what the microphone hears
at that moment: the user's recorded voice plus, optionally, the speaker's sound coming
back through the room (a delay and a gain, or an impulse response). Both carry the same
monotonic times, so what the speaker played at t and what the mic heard at t are
comparable sample for sample: this is what tests of alignment, echo cancellation and
barge-in run on, in real time or as fast as possible.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import soundfile

from app.capture.sinks import AudioSink, EventCallback, SourceEvent, SourceEventKind
from app.flow.resample import StreamResampler
from app.flow.virtual_output import OutputCallback, StreamTime


class VirtualRoom:
    """Speaker and microphone of one simulated room, at `rate` Hz, `block` samples a tick.

    `user` is what the user says (mono float32 at `user_rate`, or a path to an audio
    file); it is heard once from the start, then silence. `echo_gain` and `echo_delay`
    (seconds) shape the speaker-to-mic path; `impulse_response` replaces them when given.
    """

    def __init__(
        self,
        sink: AudioSink,
        speaker: OutputCallback,
        user: np.ndarray | Path | str,
        *,
        user_rate: int = 16000,
        rate: int = 48000,
        block: int = 480,
        echo_gain: float = 0.0,
        echo_delay: float = 0.0,
        impulse_response: np.ndarray | None = None,
        realtime: bool = True,
        tail_seconds: float = 2.0,
        on_event: EventCallback | None = None,
        name: str = "virtual room",
    ) -> None:
        if isinstance(user, (str, Path)):
            audio, user_rate = soundfile.read(str(user), dtype="float32", always_2d=True)
            user = audio.mean(axis=1)
        user = np.asarray(user, dtype=np.float32).reshape(-1)
        if user_rate != rate:
            resampler = StreamResampler(user_rate, rate)
            user = np.concatenate([resampler.process(user), resampler.flush()])
        self.user = user
        self.rate = rate
        self.block = block
        self._sink = sink
        self._speaker = speaker
        self._realtime = realtime
        self._on_event = on_event
        self.name = name
        if impulse_response is None:
            taps = int(round(echo_delay * rate))
            impulse_response = np.zeros(taps + 1, dtype=np.float32)
            impulse_response[taps] = echo_gain
        self._ir = np.asarray(impulse_response, dtype=np.float32)
        self._history = np.zeros(max(0, len(self._ir) - 1), dtype=np.float32)
        self._length = len(user) + int(tail_seconds * rate)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.played: list[np.ndarray] = []  # what the speaker played, block by block
        self.heard: list[np.ndarray] = []  # what the microphone heard, block by block
        self.error: BaseException | None = None

    @property
    def duration(self) -> float:
        return self._length / self.rate

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> bool:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s if timeout_s is not None else 2.0)
        return self._thread is None or not self._thread.is_alive()

    def wait_done(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _emit(self, kind: SourceEventKind, message: str = "") -> None:
        if self._on_event is not None:
            self._on_event(SourceEvent(self.name, kind, message))

    def _run(self) -> None:
        out = np.zeros((self.block, 1), dtype=np.float32)
        origin = time.monotonic() if self._realtime else 0.0
        period = self.block / self.rate
        self._emit(SourceEventKind.STARTED, f"{self.duration:.1f} s at {self.rate} Hz")
        try:
            for start in range(0, self._length, self.block):
                if self._stop.is_set():
                    break
                t = origin + start / self.rate
                if self._realtime:
                    delay = t - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                info = StreamTime(currentTime=t, outputBufferDacTime=t, inputBufferAdcTime=t)
                self._speaker(out, self.block, info, None)
                played = out[:, 0].copy()
                mic = self._echo(played)
                voice = self.user[start : start + self.block]
                mic[: len(voice)] += voice
                self.played.append(played)
                self.heard.append(mic)
                self._sink.push_audio(mic, self.rate, t)
            self._emit(SourceEventKind.STOPPED, "end of the scripted audio")
        except BaseException as exc:  # a test double must report, not vanish
            self.error = exc
            self._emit(SourceEventKind.LOST, f"virtual room failed: {exc}")
        finally:
            self._done.set()

    def _echo(self, played: np.ndarray) -> np.ndarray:
        if not np.any(self._ir):
            return np.zeros_like(played)
        signal = np.concatenate([self._history, played])
        echo = np.convolve(signal, self._ir)[len(self._history) : len(signal)]
        if len(self._history):
            self._history = signal[-len(self._history) :]
        return echo.astype(np.float32)

    def played_audio(self) -> np.ndarray:
        return np.concatenate(self.played) if self.played else np.zeros(0, np.float32)

    def heard_audio(self) -> np.ndarray:
        return np.concatenate(self.heard) if self.heard else np.zeros(0, np.float32)
