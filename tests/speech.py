"""Speech for tests, made offline with espeak-ng and sox (robotic, but real speech).

A thin layer over the benchmark's `SpeechCache` (content-addressed, written atomically),
with espeak-ng's own default speed so the audio is what `espeak-ng -v VOICE` says.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from app.bench.duplex_user import resample
from app.bench.speech_cache import RATE, SpeechCache, Voice

_CACHE = SpeechCache(Path(tempfile.gettempdir()) / "duetto-test-speech")
_ESPEAK_DEFAULT_WPM = 175


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox are not installed")


@cache
def speak(text: str, rate: int = 16000, voice: str = "en-us") -> np.ndarray:
    """`text` spoken at `rate` Hz, float32 mono, with the leading/trailing silence trimmed."""
    audio = _CACHE.speak(text, Voice(name=voice, wpm=_ESPEAK_DEFAULT_WPM))
    return resample(audio, RATE, rate)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def babble(seconds: float, level_db: float, seed: int = 3, rate: int = 16000) -> np.ndarray:
    """Four far-off espeak talkers at once, at `level_db` dBFS RMS (the benchmark's)."""
    from app.bench.duplex_media import noise_track
    from app.bench.duplex_scenario import Noise

    return noise_track(Noise("babble", level_db, seed), rate, seconds, _CACHE)
