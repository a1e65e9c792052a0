"""Helpers shared by the timeline and resampler tests."""

from __future__ import annotations

import numpy as np

from app.model.contract import Unit


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(n: int, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-30)


def peak_frequency(x: np.ndarray, rate: int) -> float:
    """Frequency of the strongest FFT bin (Hann window), refined by a parabola through it."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-30)
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + shift) * rate / len(x)


def frame(value: int, height: int = 4, width: int = 6) -> np.ndarray:
    """A tiny frame whose pixels say which one it is."""
    return np.full((height, width, 3), value % 256, dtype=np.uint8)


def check_contiguous(units: list[Unit], duration: float, rate: int) -> None:
    for k, unit in enumerate(units):
        assert unit.index == k
        assert unit.start == k * duration
        assert unit.duration == duration
        assert unit.sample_rate == rate
        assert unit.audio.dtype == np.float32
        assert len(unit.audio) == round(duration * rate)
