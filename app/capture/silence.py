"""Silence in real time: what a session hears while its microphone is away.

A session's time is its microphone's samples; with no microphone nothing would move:
the listener would stop, the answer being spoken would never be heard to end, and the
recording would stop growing. This source pushes digital silence at the microphone's
rate, stamped on the same monotonic clock, until it is stopped (the microphone is back).
It sends no events of its own (it is a stand-in, not a device the user chose).
"""

from __future__ import annotations

import time

import numpy as np

from app.capture.base import ThreadedSource
from app.capture.sinks import AudioSink


class SilenceSource(ThreadedSource):
    def __init__(self, sink: AudioSink, sample_rate: int, *, block_s: float = 0.02,
                 name: str = "silence") -> None:
        super().__init__(name, on_event=None)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {sample_rate}")
        self._sink = sink
        self.sample_rate = sample_rate
        self.block = max(1, round(sample_rate * block_s))
        self.samples = 0

    def _open(self) -> str:
        return f"silence at {self.sample_rate} Hz"

    def _run(self) -> None:
        zeros = np.zeros(self.block, dtype=np.float32)
        period = self.block / self.sample_rate
        origin = time.monotonic()
        while True:
            # Like a device: a block is handed over once it has been "captured".
            at = origin + self.samples / self.sample_rate
            delay = at + period - time.monotonic()
            if (delay > 0 and self._stop.wait(delay)) or self._stop.is_set():
                return
            self._sink.push_audio(zeros, self.sample_rate, at)
            self.samples += self.block
