"""The vision tower (`vpm`): SigLIP-so400m NaViT, transformers' MiniCPM-V 4.6 classes.

transformers' MiniCPM-V 4.6 embeddings and encoder are the same layers as MiniCPM-o's
SigLIP; its window-attention merger (`vit_merger`) is not part of MiniCPM-o and is left
out. The position ids are the official code's own (`official_position_ids`), not the
library's helper, which rounds differently for some grid sides (25, 49, 50, 55).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def official_position_ids(rows: int, cols: int, side: int) -> torch.Tensor:
    """Row-major ids into the side×side position table for a rows×cols patch grid.

    Each patch's fractional coordinate is bucketed into the table's cells. The official
    code does this in float32 with a step of float32(1 / rows), and the cell boundaries
    as a float32 range of step 1 / side; both roundings decide the bucket for some grid
    sides, so they are kept exactly.
    """
    boundaries = torch.arange(1 / side, 1.0, 1 / side, dtype=torch.float32)
    one = torch.tensor(1.0, dtype=torch.float32)
    frac_r = torch.arange(0, 1 - 1e-6, float(one / rows), dtype=torch.float32)
    frac_c = torch.arange(0, 1 - 1e-6, float(one / cols), dtype=torch.float32)
    bucket_r = torch.bucketize(frac_r, boundaries, right=True)
    bucket_c = torch.bucketize(frac_c, boundaries, right=True)
    return (bucket_r[:, None] * side + bucket_c).flatten()


class VisionTower(nn.Module):
    """Patch embedding + position table, `layers` SigLIP encoder layers, final LayerNorm."""

    def __init__(self, config, layers: int) -> None:
        from transformers.models.minicpmv4_6.modeling_minicpmv4_6 import (
            MiniCPMV4_6VisionEmbeddings,
            MiniCPMV4_6VisionEncoder,
        )

        super().__init__()
        config = copy.deepcopy(config)
        config.num_hidden_layers = layers
        config._attn_implementation = "sdpa"
        self.config = config
        self.embeddings = MiniCPMV4_6VisionEmbeddings(config)
        self.encoder = MiniCPMV4_6VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    @property
    def patch_size(self) -> int:
        return int(self.config.patch_size)

    def forward(self, pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """`pixels` [1, 3, p, n*p] (image.py's strip) -> hidden states [1, n, width]."""
        emb = self.embeddings
        weight = emb.patch_embedding.weight
        patches = emb.patch_embedding(pixels.to(weight.device, weight.dtype))
        hidden = patches.flatten(2).transpose(1, 2)
        rows, cols = grid
        ids = official_position_ids(rows, cols, emb.num_patches_per_side).to(weight.device)
        hidden = hidden + emb.position_embedding(ids).unsqueeze(0)
        n = rows * cols
        # One image: a single full-attention sequence.
        cu_seqlens = torch.tensor([0, n], dtype=torch.int32, device=hidden.device)
        for layer in self.encoder.layers:
            hidden = layer(hidden, attention_mask=None, cu_seqlens=cu_seqlens, max_seqlen=n)
        return self.post_layernorm(hidden)
