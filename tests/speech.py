"""Speech for tests, made offline with espeak-ng and sox (robotic, but real speech)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile

_CACHE = Path(tempfile.gettempdir()) / "duetto-test-speech"


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox are not installed")


@cache
def speak(text: str, rate: int = 16000, voice: str = "en-us") -> np.ndarray:
    """`text` spoken at `rate` Hz, float32 mono, with the leading/trailing silence trimmed."""
    _CACHE.mkdir(exist_ok=True)
    stem = f"{abs(hash((text, voice))):x}"
    raw = _CACHE / f"{stem}-raw.wav"
    out = _CACHE / f"{stem}-{rate}.wav"
    if not out.exists():
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out),
             "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%",
             "reverse"],
            check=True,
        )
    audio, got_rate = soundfile.read(out, dtype="float32")
    assert got_rate == rate
    return audio


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)
