"""The flow's velocity estimator: a DiT run chunk by chunk with its caches.

Input per frame: the current noisy mel, the encoder's frame, the speaker vector and the
prompt's mel (zeros past the prompt), 4 x 80 channels. Each block is adaLN-zero
modulated by the time step: self-attention over every cached frame plus the new ones
(no mask, no positions: the causal convolutions give the order), a two-layer causal
convolution, then an MLP.

Streaming keeps per block the last two inputs of each causal conv and the keys/values of
every frame seen. As in the reference (minicpmo-utils 1.0.6), the NEW frames' keys and
values come first in that cache, the older ones after: attention does not care, but the
stream's trimming (keep the first `prompt` frames and the last 100) does, so the order is
kept exactly.

Module names follow the published checkpoint (`decoder.estimator.*` in flow.pt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from app.model.minicpm_o.token2wav.flow_yaml import EstimatorConfig


@dataclass(frozen=True)
class DiTCache:
    """`cnn`: [depth, B, 2*hidden, 2] (each block's two convs' last two inputs);
    `att`: [depth, B, heads, T, 2*head_dim] (keys then values, newest chunk first)."""

    cnn: torch.Tensor
    att: torch.Tensor


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoids of 1000 t (cos half first) -> a two-layer MLP."""

    def __init__(self, hidden: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = (t * 1000)[:, None] * freqs.to(t)[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(hidden, inner)
        self.to_k = nn.Linear(hidden, inner)
        self.to_v = nn.Linear(hidden, inner)
        self.q_norm = nn.LayerNorm(head_dim)
        self.k_norm = nn.LayerNorm(head_dim)
        self.proj = nn.Linear(inner, hidden)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, H*d] -> [B, H, T, d]
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor,
                cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.q_norm(self._heads(self.to_q(x)))
        k = self.k_norm(self._heads(self.to_k(x)))
        v = self._heads(self.to_v(x))
        if cache is not None:
            k_old, v_old = cache.chunk(2, dim=3)
            k, v = torch.cat([k, k_old], dim=2), torch.cat([v, v_old], dim=2)  # new first
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.proj(out), torch.cat([k, v], dim=3)


class CausalConv(nn.Conv1d):
    """A conv over this frame and the kernel-1 before it, the earlier ones from a cache."""

    def forward_cached(self, x: torch.Tensor,
                       cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        context = self.kernel_size[0] - 1
        if cache is None:
            cache = x.new_zeros(x.shape[0], self.in_channels, context)
        x = torch.cat([cache, x], dim=2)
        # As one matmul over the unfolded windows: the same sum as the convolution, and on
        # a CPU far quicker for these short chunks than oneDNN's convolution set-up.
        windows = x.unfold(2, self.kernel_size[0], 1).transpose(1, 2).flatten(2)  # [B, T, C*k]
        out = F.linear(windows, self.weight.flatten(1), self.bias).transpose(1, 2)
        return out, x[..., -context:]


class ConvBlock(nn.Module):
    """Causal conv -> LayerNorm -> Mish -> causal conv, on [B, T, C] frames."""

    def __init__(self, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        # The checkpoint names these block.1, block.3 and block.6 (positions in the
        # reference's Sequential, whose other entries are transposes and the activation).
        self.block = nn.ModuleDict({"1": CausalConv(hidden, hidden, kernel),
                                    "3": nn.LayerNorm(hidden),
                                    "6": CausalConv(hidden, hidden, kernel)})

    def forward(self, x: torch.Tensor,
                cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        cache1, cache2 = cache.split(self.hidden, dim=1) if cache is not None else (None, None)
        h, new1 = self.block["1"].forward_cached(x.transpose(1, 2), cache1)
        h = F.mish(self.block["3"](h.transpose(1, 2)))
        h, new2 = self.block["6"].forward_cached(h.transpose(1, 2), cache2)
        return h.transpose(1, 2), torch.cat([new1, new2], dim=1)


class MLP(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.fc2 = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads, head_dim)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(hidden, int(hidden * mlp_ratio))
        self.norm3 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.conv = ConvBlock(hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 9 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor, cnn_cache: torch.Tensor | None,
                att_cache: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (shift_att, scale_att, gate_att, shift_mlp, scale_mlp, gate_mlp,
         shift_conv, scale_conv, gate_conv) = self.adaLN_modulation(c).chunk(9, dim=-1)
        attended, new_att = self.attn(modulate(self.norm1(x), shift_att, scale_att), att_cache)
        x = x + gate_att * attended
        convolved, new_cnn = self.conv(modulate(self.norm3(x), shift_conv, scale_conv), cnn_cache)
        x = x + gate_conv * convolved
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x, new_cnn, new_att


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, config: EstimatorConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.t_embedder = TimestepEmbedder(hidden)
        self.in_proj = nn.Linear(config.in_channels, hidden)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden, config.num_heads, config.head_dim, config.mlp_ratio)
            for _ in range(config.depth))
        self.final_layer = FinalLayer(hidden, config.out_channels)

    def forward_chunk(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                      spks: torch.Tensor, cond: torch.Tensor, cache: DiTCache | None
                      ) -> tuple[torch.Tensor, DiTCache]:
        """x, mu, cond: [B, 80, T]; t: [B]; spks: [B, 80] -> velocity [B, 80, T]."""
        c = self.t_embedder(t).unsqueeze(1)
        spks = spks.unsqueeze(2).expand(-1, -1, x.shape[2])
        h = self.in_proj(torch.cat([x, mu, spks, cond], dim=1).transpose(1, 2))
        new_cnn, new_att = [], []
        for i, block in enumerate(self.blocks):
            h, cnn, att = block(h, c, None if cache is None else cache.cnn[i],
                                None if cache is None else cache.att[i])
            new_cnn.append(cnn)
            new_att.append(att)
        out = self.final_layer(h, c).transpose(1, 2)
        return out, DiTCache(cnn=torch.stack(new_cnn), att=torch.stack(new_att))
