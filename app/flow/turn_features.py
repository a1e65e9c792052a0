"""The end-of-turn model's input: Whisper log-mel features of the last 8 s of the turn.

Smart Turn v3 is Whisper-tiny's encoder with a classifier on top, trained on features
made by transformers' `WhisperFeatureExtractor(chunk_length=8)` with
`do_normalize=True`. That extractor's own code takes 0.1-0.2 s per call on a busy
2-core machine, too slow for a decision made during a 200 ms pause, so the same steps
are done here in numpy (about 10 ms; numpy's FFT runs on the calling thread and leaves
torch's thread pool, which the model uses, alone):

1. the audio (16 kHz mono) keeps its last 8 s, or is zero-padded *at the front* to 8 s
   (the model always sees the end of the turn at the end of its window);
2. the whole 8 s window is normalized to zero mean and unit variance (eps 1e-7),
   padding included, as the extractor does with `do_normalize=True`;
3. a centred (reflect-padded) STFT, n_fft 400, hop 160, periodic Hann window, power
   spectrum; the last frame is dropped (801 -> 800 frames);
4. an 80-bin Slaney mel filterbank (0-8 kHz, Slaney-normalized), log10 with a floor
   of 1e-10, clamped to 8 below the maximum, then (x + 4) / 4.

The filterbank comes from transformers' `mel_filter_bank`, the one the extractor uses.
`tests/test_turn_end.py` holds these features and the model's probabilities against
the extractor and against the Smart Turn package's own inference.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RATE = 16000
WINDOW_SECONDS = 8
WINDOW_SAMPLES = RATE * WINDOW_SECONDS
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = WINDOW_SAMPLES // HOP  # 800


def fit_window(audio: np.ndarray) -> np.ndarray:
    """The last 8 s of `audio`, zero-padded at the front when shorter (float32)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(audio) >= WINDOW_SAMPLES:
        return audio[-WINDOW_SAMPLES:].copy()
    out = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    if len(audio):
        out[-len(audio) :] = audio
    return out


@functools.cache
def _mel_filters() -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=N_MELS,
        min_frequency=0.0,
        max_frequency=RATE / 2,
        sampling_rate=RATE,
        norm="slaney",
        mel_scale="slaney",
    )  # (201 frequency bins, 80 mels)
    return np.ascontiguousarray(filters.T, dtype=np.float64)


# numpy's Hann is symmetric; the extractor's (torch's) is periodic: one point longer, cut.
_HANN = np.hanning(N_FFT + 1)[:-1]


def log_mel_features(audio: np.ndarray) -> np.ndarray:
    """Features of the turn so far (16 kHz mono): float32 array of shape (80, 800)."""
    x = fit_window(audio)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")
    # Every hop-th window of the padded signal, without copying; the last one is dropped.
    frames = sliding_window_view(padded, N_FFT)[::HOP][:FRAMES]
    # float64 from here on, as the extractor computes: the model's int8 activations are
    # quantized per call, so a difference of 1e-6 in the features can move its answer
    # by a few hundredths.
    spectrum = np.fft.rfft(frames * _HANN, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # (800, 201)
    mel = _mel_filters() @ power.T  # (80, 800)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
