"""An output device without hardware: it pulls from a callback the way PortAudio does.

Used for `--speaker null` (or a file), for tests and for benchmarks: a thread calls the
callback once per block with a PortAudio-like time struct, paced in real time (it
consumes audio exactly as fast as a speaker would) or as fast as possible. What it
"plays" can be kept in memory or written to a WAV file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OutputCallback = Callable[[np.ndarray, int, Any, Any], None]


@dataclass
class StreamTime:
    """The fields of PortAudio's time struct that callbacks read."""

    currentTime: float  # PortAudio's spelling, read by callbacks
    outputBufferDacTime: float
    inputBufferAdcTime: float = 0.0


class VirtualOutputStream:
    def __init__(
        self,
        samplerate: int,
        blocksize: int,
        callback: OutputCallback,
        *,
        channels: int = 1,
        realtime: bool = True,
        keep: bool = False,
        wav_path: Path | None = None,
        output_latency: float = 0.0,
    ) -> None:
        self.samplerate = samplerate
        self.blocksize = blocksize
        self.channels = channels
        self._callback = callback
        self._realtime = realtime
        self._latency = output_latency
        self._keep = keep
        self._blocks: list[np.ndarray] = []
        self._wav = None
        if wav_path is not None:
            import soundfile

            self._wav = soundfile.SoundFile(
                str(wav_path), "w", samplerate=samplerate, channels=channels, subtype="FLOAT"
            )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.blocks_played = 0
        self.error: BaseException | None = None

    @property
    def time(self) -> float:
        """The stream's clock: monotonic, as PortAudio's is on most hosts."""
        return time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="virtual-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        block = np.zeros((self.blocksize, self.channels), dtype=np.float32)
        period = self.blocksize / self.samplerate
        next_due = time.monotonic()
        try:
            while not self._stop.is_set():
                if self._realtime:
                    delay = next_due - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                        if self._stop.is_set():
                            break
                now = time.monotonic()
                info = StreamTime(currentTime=now, outputBufferDacTime=now + self._latency)
                self._callback(block, self.blocksize, info, None)
                if self._keep:
                    self._blocks.append(block.copy())
                if self._wav is not None:
                    self._wav.write(block)
                self.blocks_played += 1
                next_due += period
        except BaseException as exc:  # reported to the owner, never lost in a thread
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._wav is not None:
            self._wav.close()
            self._wav = None

    close = stop

    def played(self) -> np.ndarray:
        """Everything played so far, (samples, channels); only with keep=True."""
        if not self._blocks:
            return np.zeros((0, self.channels), dtype=np.float32)
        return np.concatenate(self._blocks)

    def __enter__(self) -> VirtualOutputStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
