"""Reading a conversation recording back the way other programs would.

Python's `wave` trusts the header's sizes; sox reads the header and decodes what it
promises; libsndfile (soundfile) recovers the length from the file's size. A recording
whose header was kept up to date reads the same in all three, even after a crash.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

RECORDING = "conversation.wav"
EVENTS = "events.jsonl"


@dataclass(frozen=True)
class ReadBack:
    reader: str  # "wave", "sox", "libsndfile"
    seconds: float | None  # None: it could not read the file
    error: str = ""

    def __str__(self) -> str:
        if self.seconds is None:
            return f"{self.reader}: unreadable ({self.error})"
        return f"{self.reader} {self.seconds:.1f} s"


def read_wave(path: Path) -> ReadBack:
    try:
        with wave.open(str(path), "rb") as wav:
            frames = wav.getnframes()
            data = wav.readframes(frames)
            width = wav.getsampwidth() * wav.getnchannels()
            return ReadBack("wave", (len(data) // max(1, width)) / wav.getframerate())
    except (wave.Error, EOFError, OSError) as exc:
        return ReadBack("wave", None, str(exc) or type(exc).__name__)


_SOX_LENGTH = re.compile(r"Length \(seconds\):\s*([0-9.]+)")


def read_sox(path: Path) -> ReadBack:
    if shutil.which("sox") is None:
        return ReadBack("sox", None, "sox is not installed")
    done = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True,
                          check=False, timeout=60)
    match = _SOX_LENGTH.search(done.stderr)
    if done.returncode != 0 or match is None:
        last = done.stderr.strip().splitlines()[-1:] or [f"status {done.returncode}"]
        return ReadBack("sox", None, last[0])
    return ReadBack("sox", float(match.group(1)))


def read_libsndfile(path: Path) -> ReadBack:
    try:
        with soundfile.SoundFile(str(path)) as sf:
            frames = len(sf.read(dtype="int16"))
            return ReadBack("libsndfile", frames / sf.samplerate)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        return ReadBack("libsndfile", None, str(exc))


def read_all(path: Path) -> list[ReadBack]:
    return [read_wave(path), read_sox(path), read_libsndfile(path)]


def folders(recordings: Path) -> list[Path]:
    """Recording folders under `recordings` (any depth), oldest first."""
    if not recordings.is_dir():
        return []
    found = {p.parent for p in recordings.rglob(RECORDING)} | {
        p.parent for p in recordings.rglob(EVENTS)}
    return sorted(found, key=lambda p: p.stat().st_mtime)


def channel_levels(path: Path, start_s: float = 0.0) -> tuple[float, float]:
    """RMS in dBFS of the user (left) and assistant (right) channels from `start_s`."""
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = audio[int(start_s * rate):]
    if len(audio) == 0 or audio.shape[1] < 2:
        return -120.0, -120.0
    rms = np.sqrt(np.mean(np.square(audio[:, :2], dtype=np.float64), axis=0)) + 1e-9
    return float(20 * np.log10(rms[0])), float(20 * np.log10(rms[1]))
