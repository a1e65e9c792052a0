"""Echo cancellation: remove the assistant's own voice from the microphone.

WebRTC's AEC3, through livekit's AudioProcessingModule, works without any server. What
the player sends to the speaker is the far end; the microphone is the near end. Both
arrive here stamped on one clock (the player's DAC times, the mic's ADC times), and every
far-end frame is handed to the canceller before the near-end frame captured after it,
which is the order AEC3 needs; it estimates the acoustic delay itself (up to ~500 ms).

The module takes exactly 10 ms int16 frames; anything else aborts the whole process (a
Rust panic, not a Python exception), so every call here goes through `_frame()`, which
checks the length first.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

SUPPORTED_RATES = (8000, 16000, 32000, 48000)


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


class EchoCanceller:
    """Cleans near-end audio in 10 ms frames, given the far end on the same clock.

    `process_near` returns as many samples as it was given over time, but holds back a
    remainder shorter than one frame until the next call (at most 10 ms of delay).
    When disabled, it passes audio through unchanged and keeps no far-end history.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        enabled: bool = True,
        noise_suppression: bool = False,
        high_pass_filter: bool = True,
        far_history_seconds: float = 2.0,
    ) -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(
                f"echo cancellation runs at {', '.join(map(str, SUPPORTED_RATES))} Hz, "
                f"not {sample_rate} Hz"
            )
        self.sample_rate = sample_rate
        self.frame = sample_rate // 100
        self.enabled = enabled
        self._apm = None
        if enabled:
            from livekit import rtc

            self._rtc = rtc
            self._apm = rtc.AudioProcessingModule(
                echo_cancellation=True,
                noise_suppression=noise_suppression,
                high_pass_filter=high_pass_filter,
                auto_gain_control=False,
            )
        self._lock = threading.Lock()  # far end comes from the player's side
        self._far: deque[tuple[float, np.ndarray]] = deque(
            maxlen=int(far_history_seconds * 100) + 1
        )
        self._far_pending = np.zeros(0, dtype=np.float32)
        self._far_pending_time = 0.0
        self._near_pending = np.zeros(0, dtype=np.float32)
        self._near_pending_time = 0.0
        self.far_frames_fed = 0
        self.near_frames_processed = 0

    def push_far(self, samples: np.ndarray, play_time: float) -> None:
        """What the speaker plays, starting at `play_time` (seconds, the shared clock)."""
        if not self.enabled:
            return
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        with self._lock:
            if len(self._far_pending) == 0:
                self._far_pending_time = play_time
            buf = np.concatenate([self._far_pending, samples])
            t = self._far_pending_time
            whole = len(buf) // self.frame * self.frame
            for start in range(0, whole, self.frame):
                self._far.append((t, buf[start : start + self.frame].copy()))
                t += self.frame / self.sample_rate
            self._far_pending = buf[whole:]
            self._far_pending_time = t

    def process_near(self, samples: np.ndarray, capture_time: float) -> np.ndarray:
        """Clean mic audio captured from `capture_time`; returns the cleaned samples."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not self.enabled:
            return samples
        if len(self._near_pending) == 0:
            self._near_pending_time = capture_time
        buf = np.concatenate([self._near_pending, samples])
        whole = len(buf) // self.frame * self.frame
        out = np.empty(whole, dtype=np.float32)
        t = self._near_pending_time
        for start in range(0, whole, self.frame):
            self._feed_far_until(t + self.frame / self.sample_rate)
            out[start : start + self.frame] = self._process(buf[start : start + self.frame])
            t += self.frame / self.sample_rate
        self._near_pending = buf[whole:]
        self._near_pending_time = t
        return out

    def _feed_far_until(self, t: float) -> None:
        """Hand AEC3 every far-end frame that started playing before `t`."""
        while True:
            with self._lock:
                if not self._far or self._far[0][0] >= t:
                    return
                _, frame = self._far.popleft()
            self._apm.process_reverse_stream(self._frame(frame))
            self.far_frames_fed += 1

    def _process(self, near: np.ndarray) -> np.ndarray:
        frame = self._frame(near)
        self._apm.process_stream(frame)
        self.near_frames_processed += 1
        cleaned = np.frombuffer(frame.data, dtype=np.int16)
        return cleaned.astype(np.float32) / 32767.0

    def _frame(self, samples: np.ndarray):
        if len(samples) != self.frame:  # guard against the process-wide abort
            raise ValueError(f"echo canceller frame must be {self.frame} samples")
        data = bytearray(_to_int16(samples).tobytes())
        return self._rtc.AudioFrame(data, self.sample_rate, 1, self.frame)


class EchoPathMonitor:
    """Tells whether the speaker is heard by the microphone at all.

    With headphones (or a speaker far away) there is no echo to cancel, and WebRTC's
    suppressor still mutes much of the user's voice while the assistant talks, which
    hides barge-ins. Comparing levels tells the two cases apart. While the far end is
    active, the mic holds echo + room noise + perhaps the user; the room's noise floor is
    learnt from the blocks where the far end is silent and taken off, and the quietest
    remaining mic-to-far-end ratio over recent seconds bounds the echo path's coupling
    from above. When that bound is far below anything voice activity could mistake for
    speech, the raw mic is safe to listen to.
    """

    def __init__(
        self,
        *,
        negligible_db: float = -35.0,
        far_active_db: float = -45.0,
        block_ticks: int = 12,
        window: int = 40,
        min_active: int = 1,
    ) -> None:
        self.negligible_db = negligible_db
        self.far_active_db = far_active_db
        # Levels are compared over blocks of about a quarter second (12 ticks of 20 ms),
        # so that the echo's own delay (tens of milliseconds) cannot make a loud path
        # look quiet.
        self.block_ticks = block_ticks
        self.min_active = min_active
        self._ratios: deque[float] = deque(maxlen=window)
        self._quiet: deque[float] = deque(maxlen=window)  # mic power while the far end rests
        self._far_energy = 0.0
        self._mic_energy = 0.0
        self._ticks = 0

    def update(self, far: np.ndarray, mic: np.ndarray) -> None:
        """One tick of what was played and what the mic heard (about the same span)."""
        self._far_energy += float(np.mean(np.square(far, dtype=np.float64))) if len(far) else 0
        self._mic_energy += float(np.mean(np.square(mic, dtype=np.float64))) if len(mic) else 0
        self._ticks += 1
        if self._ticks < self.block_ticks:
            return
        far_power = self._far_energy / self._ticks
        mic_power = self._mic_energy / self._ticks
        self._far_energy = self._mic_energy = 0.0
        self._ticks = 0
        far_db = 10.0 * np.log10(far_power + 1e-12)
        if far_db < self.far_active_db:
            self._quiet.append(mic_power)
            return
        echo_power = max(mic_power - self.noise_power, 0.0)
        self._ratios.append(10.0 * np.log10(echo_power + 1e-12) - far_db)

    @property
    def noise_power(self) -> float:
        """The room's noise floor: a low percentile of the mic while nothing plays (the
        user talks in some of those blocks, so not the median)."""
        if not self._quiet:
            return 0.0
        return float(np.percentile(np.fromiter(self._quiet, float), 10))

    @property
    def coupling_db(self) -> float | None:
        """Upper bound of the echo path's gain in dB, once enough far end was heard.

        Until the far end has rested for a block, the room's noise is not known and the
        bound holds the noise too: a low one still shows the path negligible, a high one
        says nothing yet (None). Taken as an echo path, a model that spoke from its first
        quarter second over a noisy room made the canceller listen (and, not converged,
        mute the user): in a bench run with pink noise at -40 dBFS and no echo at all,
        the user's first two seconds of speech went unheard.
        """
        if len(self._ratios) < self.min_active:
            return None
        bound = float(np.percentile(np.fromiter(self._ratios, float), 10))
        if not self._quiet and bound >= self.negligible_db:
            return None
        return bound

    @property
    def negligible(self) -> bool:
        coupling = self.coupling_db
        return coupling is not None and coupling < self.negligible_db
