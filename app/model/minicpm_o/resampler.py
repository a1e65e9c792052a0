"""The resampler: 64 learned queries attend once over the vision tower's patches.

Keys are the patches projected to the LLM's width plus a fixed 2-D sine-cosine position
code of each patch's (row, column); values are the projected patches without it. The
result goes through a LayerNorm and one square projection: 64 embeddings per image.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_EPS = 1e-6  # the official resampler's LayerNorm epsilon


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[..., dim]: sin then cos of positions at dim/2 geometric frequencies (float32)."""
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    angles = np.einsum("hw,d->hwd", positions, omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """[rows, cols, dim]: the column's code in the first half, the row's in the second
    (the official table's order)."""
    col_pos, row_pos = np.meshgrid(np.arange(cols, dtype=np.float32),
                                   np.arange(rows, dtype=np.float32))
    table = np.concatenate([_sincos_1d(dim // 2, col_pos), _sincos_1d(dim // 2, row_pos)], -1)
    return torch.from_numpy(table).float()


class Resampler(nn.Module):
    def __init__(self, num_queries: int, embed_dim: int, num_heads: int, kv_dim: int) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.embed_dim = embed_dim
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dim))
        self.kv_proj = (nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim
                        else nn.Identity())
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=_EPS)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=_EPS)
        self.ln_post = nn.LayerNorm(embed_dim, eps=_EPS)
        self.proj = nn.Parameter(embed_dim**-0.5 * torch.randn(embed_dim, embed_dim))
        # Position codes per grid, made when first needed. (The official code keeps a
        # 70x70 table, 80 MB at the real width, of which a frame reads its grid's corner;
        # each cell depends on its row and column only, so the values are the same.)
        self._positions_of: dict[tuple, torch.Tensor] = {}

    def _positions(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        key = (rows, cols, like.device, like.dtype)
        found = self._positions_of.get(key)
        if found is None:
            table = sincos_2d(self.embed_dim, rows, cols).reshape(rows * cols, -1)
            found = self._positions_of[key] = table.to(like.device, like.dtype)
        return found

    def forward(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """`patches` [1, n, kv_dim] of one image -> [1, num_queries, embed_dim]."""
        pos = self._positions(*grid, like=patches).unsqueeze(1)  # [n, 1, D]
        kv = self.ln_kv(self.kv_proj(patches)).permute(1, 0, 2)  # [n, 1, D]
        q = self.ln_q(self.query).unsqueeze(1)  # [Q, 1, D]
        out = self.attn(q, kv + pos, kv, need_weights=False)[0]  # [Q, 1, D]
        return self.ln_post(out.permute(1, 0, 2)) @ self.proj
