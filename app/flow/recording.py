"""Crash-safe session recording: a stereo WAV and a JSON-lines event log.

Left is the user's microphone, right is what the assistant played, sample-aligned on
the session clock: each write says where on that clock its first sample lies, and the
recorder places it there (padding a gap with silence), so two streams that arrive at
different moments still line up. The WAV header is rewritten and the file synced about
once a second, so a kill -9 leaves a valid file missing at most the last second; the log
is flushed at the same pace.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile


class _PositionedChannel:
    """Samples of one channel not yet written, starting at a known clock position."""

    def __init__(self) -> None:
        self.start = 0  # clock position (samples) of pending[0]
        self.pending = np.zeros(0, dtype=np.float32)
        self.late_samples = 0  # arrived for positions already written: dropped, counted

    @property
    def end(self) -> int:
        return self.start + len(self.pending)

    def put(self, position: int, samples: np.ndarray) -> None:
        if position < self.start:  # the recording has moved past this already
            skip = min(len(samples), self.start - position)
            self.late_samples += skip
            samples = samples[skip:]
            position = self.start
        if position > self.end:
            self.pending = np.concatenate(
                [self.pending, np.zeros(position - self.end, np.float32)]
            )
        offset = position - self.start
        needed = offset + len(samples)
        if needed > len(self.pending):
            self.pending = np.concatenate(
                [self.pending, np.zeros(needed - len(self.pending), np.float32)]
            )
        self.pending[offset:needed] = samples

    def take(self, upto: int) -> np.ndarray:
        """Remove and return positions [start, upto), silence where nothing arrived."""
        n = upto - self.start
        out = np.zeros(n, dtype=np.float32)
        have = min(n, len(self.pending))
        out[:have] = self.pending[:have]
        self.pending = self.pending[have:]
        self.start = upto
        return out


class SessionRecorder:
    """Writes `<folder>/conversation.wav` and `<folder>/events.jsonl` as the session runs.

    `max_lag_seconds` bounds memory: when one channel is that far ahead of the other,
    the quiet one is written as silence up to there (a stalled player must not make the
    recording hold the user's audio back for ever).
    """

    def __init__(
        self,
        folder: Path,
        sample_rate: int = 24000,
        *,
        sync_interval: float = 1.0,
        max_lag_seconds: float = 2.0,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.sample_rate = sample_rate
        self.wav_path = folder / "conversation.wav"
        self.log_path = folder / "events.jsonl"
        self._wav = soundfile.SoundFile(
            str(self.wav_path), "w", samplerate=sample_rate, channels=2, subtype="PCM_16"
        )
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives with self
        self._lock = threading.Lock()
        self._user = _PositionedChannel()
        self._assistant = _PositionedChannel()
        self._written = 0
        self._sync_interval = sync_interval
        self._last_sync = time.monotonic()
        self._max_lag = int(max_lag_seconds * sample_rate)
        self._closed = False

    # Writers give the session-clock time of their first sample, in seconds.
    def write_user(self, samples: np.ndarray, t: float) -> None:
        self._put(self._user, samples, t)

    def write_assistant(self, samples: np.ndarray, t: float) -> None:
        self._put(self._assistant, samples, t)

    def event(self, kind: str, t: float, /, **fields: Any) -> None:
        """One line of the log: what happened, when on the session clock, details."""
        record = {"t": round(t, 6), "event": kind, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            if self._closed:
                return
            self._log.write(line + "\n")
            self._maybe_sync()

    def _put(self, channel: _PositionedChannel, samples: np.ndarray, t: float) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        position = round(t * self.sample_rate)
        with self._lock:
            if self._closed:
                return
            channel.put(position, samples)
            both = min(self._user.end, self._assistant.end)
            ahead = max(self._user.end, self._assistant.end)
            upto = max(both, ahead - self._max_lag)
            if upto > self._written:
                self._write_upto(upto)
            self._maybe_sync()

    def _write_upto(self, upto: int) -> None:
        left = self._user.take(upto)
        right = self._assistant.take(upto)
        self._wav.write(np.stack([left, right], axis=1))
        self._written = upto

    def _maybe_sync(self) -> None:
        now = time.monotonic()
        if now - self._last_sync >= self._sync_interval:
            self._sync()
            self._last_sync = now

    def _sync(self) -> None:
        self._wav.flush()  # rewrites the header's sizes (libsndfile's sf_write_sync)
        self._log.flush()
        os.fsync(self._log.fileno())

    @property
    def late_samples(self) -> int:
        return self._user.late_samples + self._assistant.late_samples

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            end = max(self._user.end, self._assistant.end)
            if end > self._written:
                self._write_upto(end)
            self._sync()
            self._wav.close()
            self._log.close()
            self._closed = True


def read_events(path: Path) -> list[dict[str, Any]]:
    """The log's events; a torn last line (the process died mid-write) is skipped."""
    events = []
    with open(path, encoding="utf-8") as log:
        for line in log:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events
