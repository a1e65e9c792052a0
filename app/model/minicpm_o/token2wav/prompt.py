"""A voice as token2wav needs it: what the voice prompt recording becomes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VoicePrompt:
    """The recording's speech codes, its speaker embedding and its mel frames.

    `tokens`: int32 [1, N], 25 a second (the speech tokenizer's codes). `speaker`:
    float32 [1, D] (CAM++'s embedding; D is 192 in the published encoder). `mel`: float32
    [1, 2N, 80], the 24 kHz log-mel of the recording at 50 frames a second, padded or cut
    to two frames per code, as the flow's prompt expects.
    """

    tokens: torch.Tensor
    speaker: torch.Tensor
    mel: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.tokens.shape[0] != 1:
            raise ValueError(f"prompt tokens must be [1, N], got {tuple(self.tokens.shape)}")
        if self.speaker.dim() != 2 or self.speaker.shape[0] != 1:
            raise ValueError(f"speaker embedding must be [1, D], got {tuple(self.speaker.shape)}")
        if self.mel.dim() != 3 or self.mel.shape[1] != 2 * self.tokens.shape[1]:
            raise ValueError(f"prompt mel must be [1, 2N, mels] for N={self.tokens.shape[1]} "
                             f"codes, got {tuple(self.mel.shape)}")

    def to(self, device: torch.device | str) -> VoicePrompt:
        """The same prompt with its tensors on `device` (where the flow runs)."""
        return VoicePrompt(tokens=self.tokens.to(device), speaker=self.speaker.to(device),
                           mel=self.mel.to(device))
