"""The vocoder run chunk by chunk, as minicpmo-utils 1.0.6's `Token2wav.stream` runs it.

Each chunk of mel frames from the flow is vocoded together with the last 8 frames of the
chunk before (160 ms), whose excitation is reused so the source's phase runs on. The
first 3,840 samples it makes (those 8 frames again) are cross-faded with the previous
chunk's last 3,840 samples by the two halves of a Hamming window of 7,680; those last
samples were held back when that chunk was returned (the next chunk's fade replaces
them), except at the end of a turn, when nothing follows. The first chunk of a turn has
nothing to fade with: it is returned whole behind 3,840 samples of silence, so every
chunk but the last comes out exactly as long as its own frames (480 samples each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.model.minicpm_o.token2wav.hift import HiFTGenerator

MEL_CACHE_FRAMES = 8  # frames repeated at each seam (160 ms at 50 frames a second)


@dataclass(frozen=True)
class VocoderCache:
    """What one chunk leaves for the next: its last mel frames, their excitation and the
    speech held back. Empty (zero-length) at the start of a turn."""

    mel: torch.Tensor  # [1, bins, <= MEL_CACHE_FRAMES]
    source: torch.Tensor  # [1, 1, <= frames * hop]
    speech: torch.Tensor  # [1, <= frames * hop]

    @classmethod
    def empty(cls, mel_bins: int, device: torch.device | str) -> VocoderCache:
        return cls(mel=torch.zeros(1, mel_bins, 0, device=device),
                   source=torch.zeros(1, 1, 0, device=device),
                   speech=torch.zeros(1, 0, device=device))


def cross_fade(speech: torch.Tensor, previous_tail: torch.Tensor,
               window: torch.Tensor) -> torch.Tensor:
    """The start of `speech` faded in by the window's first half over the held-back tail
    faded out by its second half (in the window's float64, rounded back, as 1.0.6 does)."""
    overlap = window.shape[0] // 2
    faded = speech.clone()
    faded[..., :overlap] = (speech[..., :overlap] * window[:overlap]
                            + previous_tail[..., -overlap:] * window[overlap:]).to(speech.dtype)
    return faded


class VocoderStream:
    """HiFT over a turn's mel chunks; `step` returns each chunk's speech as it can be
    played. The cache can be read and set, so a turn can start from a saved state."""

    def __init__(self, hift: HiFTGenerator, generator: torch.Generator | None = None) -> None:
        self.hift = hift
        self.generator = generator
        device = hift.stft_window.device
        self.overlap = MEL_CACHE_FRAMES * hift.config.hop  # 3,840 samples
        self.window = torch.from_numpy(np.hamming(2 * self.overlap)).to(device)
        self.cache = VocoderCache.empty(hift.config.mel_bins, device)

    def reset(self) -> None:
        """A new turn: nothing to fade with, nothing held back."""
        self.cache = VocoderCache.empty(self.hift.config.mel_bins, self.window.device)

    @torch.inference_mode()
    def step(self, mel: torch.Tensor, *, last: bool) -> torch.Tensor:
        """mel [1, bins, frames] -> speech [samples] (float32, 24 kHz).

        Not last: frames x hop samples (the tail held back for the next fade). Last: the
        repeated frames' samples plus everything, tail included.
        """
        cache = self.cache
        first = cache.speech.shape[-1] == 0
        mel = torch.cat([cache.mel, mel.to(cache.mel.dtype)], dim=2)
        speech, source = self.hift(mel, cache.source, self.generator)
        if not first:
            speech = cross_fade(speech, cache.speech, self.window)
        self.cache = VocoderCache(mel=mel[..., -MEL_CACHE_FRAMES:].clone(),
                                  source=source[..., -self.overlap:].clone(),
                                  speech=speech[..., -self.overlap:].clone())
        if not last:
            speech = speech[:, :-self.overlap]
            if first:
                silence = torch.zeros(1, self.overlap, dtype=speech.dtype, device=speech.device)
                speech = torch.cat([silence, speech], dim=1)
        return speech[0]
