"""A persona's voice recording read as mono float32 at the rate a family's encoder hears.

Shared by the families that condition on a recording (Moshi/PersonaPlex at 24 kHz,
MiniCPM-o at 16 kHz); each adds its own checks (length, level) on top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.model.contract import BackendError


def read_mono(path: Path, rate: int) -> np.ndarray:
    """`path` (any format libsndfile reads) mixed to mono and resampled to `rate`."""
    import soundfile

    try:
        audio, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own LibsndfileError
        raise BackendError(f"the voice recording {path} cannot be read ({exc})",
                           hint="use a WAV or FLAC file") from exc
    mono = audio.mean(axis=1)
    if file_rate != rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(file_rate), rate)
        mono = resample_poly(mono, rate // g, int(file_rate) // g).astype(np.float32)
    return mono.astype(np.float32, copy=False)
