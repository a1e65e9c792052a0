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
    file); it is heard once from the start, then silence. `say()` adds more speech while
    the room runs, heard from the next block on: a test can react to what the assistant
    does, as a person would. `echo_gain` and `echo_delay` (seconds) shape the
    speaker-to-mic path; `impulse_response` replaces them when given. The room runs for
    the user's audio plus `tail_seconds`, or until stopped when `until_stopped` is set.
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
        until_stopped: bool = False,
        keep: bool = True,
        keep_seconds: float | None = None,
        on_event: EventCallback | None = None,
        name: str = "virtual room",
    ) -> None:
        if isinstance(user, (str, Path)):
            audio, user_rate = soundfile.read(str(user), dtype="float32", always_2d=True)
            user = audio.mean(axis=1)
        user = np.asarray(user, dtype=np.float32).reshape(-1)
        self.user_rate = user_rate
        self.rate = rate
        user = self._to_room_rate(user, user_rate)
        self.user = user
        self._said: list[tuple[int, np.ndarray]] = []  # (first block index, samples)
        self._said_lock = threading.Lock()
        self._block_index = 0
        self.block = block
        self._sink = sink
        self._speaker = speaker
        self._realtime = realtime
        self._on_event = on_event
        self.name = name
        if impulse_response is None:
            taps = round(echo_delay * rate)
            impulse_response = np.zeros(taps + 1, dtype=np.float32)
            impulse_response[taps] = echo_gain
        self._ir = np.asarray(impulse_response, dtype=np.float32)
        self._history = np.zeros(max(0, len(self._ir) - 1), dtype=np.float32)
        self._length = None if until_stopped else len(user) + int(tail_seconds * rate)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._keep = keep  # keep what was played and heard
        # With `keep_seconds`, only that much recent history is kept (long runs must not
        # grow); `played_since` still counts blocks from the start.
        self._keep_blocks = (
            None if keep_seconds is None else max(1, int(keep_seconds * rate / block))
        )
        self._dropped = 0
        self._keep_lock = threading.Lock()
        self.played: list[np.ndarray] = []  # what the speaker played, block by block
        self.heard: list[np.ndarray] = []  # what the microphone heard, block by block
        self.error: BaseException | None = None

    def _to_room_rate(self, samples: np.ndarray, rate: int) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if rate == self.rate:
            return samples
        resampler = StreamResampler(rate, self.rate)
        return np.concatenate([resampler.process(samples), resampler.flush()])

    @property
    def duration(self) -> float | None:
        return None if self._length is None else self._length / self.rate

    @property
    def now(self) -> float:
        """Room time (seconds since its start) of the next block to be heard."""
        return self._block_index * self.block / self.rate

    def say(self, samples: np.ndarray, rate: int | None = None) -> float:
        """Speak `samples` from the next block on; returns the room time it starts at."""
        audio = self._to_room_rate(samples, rate or self.user_rate)
        with self._said_lock:
            first = self._block_index + 1
            self._said.append((first, audio))
        return first * self.block / self.rate

    def _live_voice(self, index: int) -> np.ndarray | None:
        with self._said_lock:
            if not self._said:
                return None
            mix = np.zeros(self.block, dtype=np.float32)
            keep = []
            for first, audio in self._said:
                offset = (index - first) * self.block
                if offset < 0:
                    keep.append((first, audio))
                    continue
                part = audio[offset : offset + self.block]
                mix[: len(part)] += part
                if offset + self.block < len(audio):
                    keep.append((first, audio))
            self._said = keep
            return mix

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
        length = "until stopped" if self._length is None else f"{self.duration:.1f} s"
        self._emit(SourceEventKind.STARTED, f"{length} at {self.rate} Hz")
        try:
            index = 0
            while self._length is None or index * self.block < self._length:
                if self._stop.is_set():
                    break
                start = index * self.block
                self._block_index = index
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
                live = self._live_voice(index)
                if live is not None:
                    mic += live
                if self._keep:
                    with self._keep_lock:
                        self.played.append(played)
                        self.heard.append(mic)
                        extra = 0 if self._keep_blocks is None else (
                            len(self.played) - self._keep_blocks
                        )
                        if extra > 0:
                            del self.played[:extra]
                            del self.heard[:extra]
                            self._dropped += extra
                self._sink.push_audio(mic, self.rate, t)
                index += 1
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

    def played_since(self, index: int) -> tuple[list[np.ndarray], int]:
        """Blocks played from block number `index` on (as far as kept), and the count so far."""
        with self._keep_lock:
            start = max(0, index - self._dropped)
            return self.played[start:], self._dropped + len(self.played)

    def played_audio(self) -> np.ndarray:
        return np.concatenate(self.played) if self.played else np.zeros(0, np.float32)

    def heard_audio(self) -> np.ndarray:
        return np.concatenate(self.heard) if self.heard else np.zeros(0, np.float32)
