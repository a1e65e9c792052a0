"""The streaming log-mel front end, exactly as the official duplex code computes it.

The official "exact" streaming processor keeps every sample heard so far (up to a
30 s window), recomputes Whisper's log-mel over all of it at each chunk and emits only
frames whose STFT window lies wholly inside the buffer. Its log floor depends on the
buffer: a fixed floor of -10 (log10 power) while the buffer holds under 5 s, then the
buffer's maximum minus 8 (Whisper's own dynamic range). We compute the same features
with transformers' Whisper mel filters and torch's STFT, so our audio embeddings equal
the official path's unit by unit.

Each emitted chunk is `chunk` frames (100 per second) plus `context` frames on each side
for the encoder's convolutions (none before the first chunk).
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400  # Whisper's 25 ms window
HOP = 160  # 10 ms: 100 frames a second
FLOOR_DB = -10.0  # fixed log10 floor while the buffer is short
DYNAMIC_RANGE = 8.0  # then the buffer's max minus this
DYNAMIC_AFTER = 5 * SAMPLE_RATE  # samples from which the floor becomes dynamic
WINDOW_TRIGGER = 30 * SAMPLE_RATE  # the buffer slides when it reaches 30 s ...
WINDOW_STRIDE = 10 * SAMPLE_RATE  # ... by 10 s
WINDOW_KEEP = 1 * SAMPLE_RATE  # never sliding away the last second


class LogMel:
    """Whisper's log-mel spectrogram with the official streaming floor rule."""

    def __init__(self, n_mels: int) -> None:
        from transformers import WhisperFeatureExtractor

        fe = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE,
                                     hop_length=HOP, n_fft=N_FFT)
        self.filters = torch.from_numpy(np.asarray(fe.mel_filters, dtype=np.float32))
        self.window = torch.hann_window(N_FFT)

    def __call__(self, samples: np.ndarray) -> torch.Tensor:
        """[n_mels, len(samples) // HOP] features of a whole buffer."""
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).unsqueeze(0)
        stft = torch.stft(wave, n_fft=N_FFT, hop_length=HOP, window=self.window,
                          return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(self.filters.T @ power, min=1e-10).log10()
        if len(samples) < DYNAMIC_AFTER:
            floor = torch.tensor(FLOOR_DB, dtype=log_spec.dtype)
        else:
            floor = log_spec.max() - DYNAMIC_RANGE
        return ((torch.maximum(log_spec, floor) + 4.0) / 4.0)[0]


class StreamingMel:
    """Feed samples chunk by chunk; get each chunk's frames with their CNN context."""

    def __init__(self, n_mels: int, *, chunk_ms: int, first_chunk_ms: int,
                 context_ms: int) -> None:
        self.logmel = LogMel(n_mels)
        self.chunk_samples = round(chunk_ms * SAMPLE_RATE / 1000)
        self.chunk_frames = self.chunk_samples // HOP
        # The first chunk is aligned down to whole frames (1035 ms -> 1030 ms).
        self.first_chunk_samples = max(HOP, round(first_chunk_ms * SAMPLE_RATE / 1000)
                                       // HOP * HOP)
        self.context_frames = int(context_ms * SAMPLE_RATE / 1000) // HOP
        self.reset()

    def reset(self) -> None:
        self.buffer = np.zeros(0, dtype=np.float32)
        self.emitted = 0  # global frame index of the next core frame
        self.base = 0  # global frame index of the buffer's first frame
        self.first = True

    def chunk_size(self) -> int:
        """Samples the next call wants."""
        return self.first_chunk_samples if self.first else self.chunk_samples

    def _slide(self) -> None:
        size = len(self.buffer)
        if size < WINDOW_TRIGGER:
            return
        keep = min(WINDOW_KEEP, size - WINDOW_STRIDE)
        drop = min(WINDOW_STRIDE, max(0, size - keep)) // HOP * HOP
        if drop > 0:
            self.buffer = self.buffer[drop:]
            self.base += drop // HOP

    def _stable_frames(self) -> int:
        size = len(self.buffer)
        if size < N_FFT // 2:
            return 0
        return (size - N_FFT // 2) // HOP + 1

    def process(self, samples: np.ndarray) -> torch.Tensor:
        """Append `samples`; [n_mels, frames] of the next chunk with its context, or
        [n_mels, 0] when the buffer does not yet hold the chunk's right context."""
        self.buffer = np.concatenate([self.buffer, np.asarray(samples, dtype=np.float32)])
        self._slide()
        if len(self.buffer) < N_FFT:
            raise ValueError(f"a chunk needs at least {N_FFT} samples, got {len(self.buffer)}")
        mel = self.logmel(self.buffer)
        total = mel.shape[-1]
        stable = self.base + min(total, self._stable_frames())
        core_end = self.emitted + self.chunk_frames
        self.first = False
        if stable < core_end + self.context_frames:
            return mel[:, :0]
        start = max(0, max(0, self.emitted - self.context_frames) - self.base)
        end = core_end + self.context_frames - self.base
        start, end = min(start, total), max(min(start, total), min(end, total))
        self.emitted = core_end
        return mel[:, start:end]


CLIP_SAMPLES = 30 * SAMPLE_RATE  # the offline path pads each clip to Whisper's 30 s


def clip_logmel(logmel: LogMel, samples: np.ndarray) -> list[torch.Tensor]:
    """The official offline features of a clip: cut into 30 s pieces, each padded with
    zeros to 30 s (so its floor is the dynamic one) and cut back to its own frames
    (ceil(len / HOP)). One [n_mels, frames] tensor per piece."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    pieces = [samples[i:i + CLIP_SAMPLES] for i in range(0, max(len(samples), 1), CLIP_SAMPLES)]
    out = []
    for piece in pieces:
        padded = np.zeros(CLIP_SAMPLES, dtype=np.float32)
        padded[:len(piece)] = piece
        out.append(logmel(padded)[:, :-(-len(piece) // HOP)])
    return out
