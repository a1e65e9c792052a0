"""The two-layer MLP that maps an encoder's width to another (audio -> LLM, LLM -> TTS)."""

from __future__ import annotations

import torch
from torch import nn


class MLPProjector(nn.Module):
    """Linear, ReLU, Linear (the official MultiModalProjector's names)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim, bias=True)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(out_dim, out_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(x)))
