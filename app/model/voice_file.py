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
    try:
        import soundfile
    except ImportError:  # the GPU check's bare environment: 16-bit WAV through the stdlib
        soundfile = None
    try:
        if soundfile is None:
            audio, file_rate = _read_pcm16_wav(path)
        else:
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


def _read_pcm16_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as float32 [frames, channels] and its rate (no soundfile)."""
    import wave

    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM WAV can be read without soundfile")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        audio = pcm.reshape(-1, wav.getnchannels()).astype(np.float32) / 32768.0
        return audio, wav.getframerate()
