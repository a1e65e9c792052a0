"""The flow's upsampling conformer encoder, run chunk by chunk with its caches.

Speech codes (25 a second, already embedded) go through a linear input layer, a
pre-look-ahead convolution that lets each code see the next `pre_lookahead_len` (3)
codes, a stack of conformer layers (relative-position self-attention + feed-forward),
a 2x upsampler (nearest repeat, then a causal convolution) to 50 frames a second, and a
second conformer stack. Streaming keeps three things between chunks: the last two
look-ahead-conv outputs, the upsampler's last `2 * stride` inputs, and every layer's
keys and values (attention sees the whole cached past, no mask).

Module and parameter names follow the published checkpoint's `flow.pt`, so its state
dict loads as it is. The caches keep the reference's (minicpmo-utils 1.0.6) layouts,
including a quirk that matters for equal output: the first stack's key/value cache is
stored twice over along time (`[c, c]`) so that both stacks' caches stack into one
tensor of `2 * t` frames; the stream's trimming then cuts that tensor, and the first
stack reads back the first half of whatever is left (see `FlowModel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from app.model.minicpm_o.token2wav.flow_yaml import EncoderConfig


@dataclass(frozen=True)
class ConformerCache:
    """What one chunk leaves for the next.

    `cnn`: [B, C, 2 + 2*stride], the look-ahead conv's last two outputs then the
    upsampler's last inputs. `att`: [blocks + up_blocks, B, heads, 2*t, 2*d_k], keys and
    values (keys first on the last axis) of every layer, oldest frame first; the first
    `blocks` layers' entries hold their t code-rate frames twice over (see module doc).
    """

    cnn: torch.Tensor
    att: torch.Tensor


class LinearEmbed(nn.Module):
    """Linear + LayerNorm, scaled by sqrt(width) as the relative-position encoder does."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        # Index names (out.0, out.1) are the checkpoint's.
        self.out = nn.Sequential(nn.Linear(in_size, out_size), nn.LayerNorm(out_size, eps=1e-5))
        self.scale = math.sqrt(out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x) * self.scale


def relative_positions(size: int, width: int, *, dtype: torch.dtype,
                       device: torch.device) -> torch.Tensor:
    """Sinusoids of relative positions size-1 ... -(size-1): [1, 2*size-1, width].

    ESPnet's "new" relative encoding: even channels sin(r * f), odd channels cos(r * f).
    """
    rel = torch.arange(size - 1, -size, -1, dtype=torch.float32, device=device).unsqueeze(1)
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32, device=device)
                     * -(math.log(10000.0) / width))
    table = torch.zeros(2 * size - 1, width, device=device)
    table[:, 0::2] = torch.sin(rel * freq)
    table[:, 1::2] = torch.cos(rel * freq)
    return table.unsqueeze(0).to(dtype)


class RelPositionAttention(nn.Module):
    """Self-attention with Transformer-XL relative positions (biases u and v)."""

    def __init__(self, heads: int, width: int, key_bias: bool) -> None:
        super().__init__()
        self.heads, self.d_k = heads, width // heads
        self.linear_q = nn.Linear(width, width)
        self.linear_k = nn.Linear(width, width, bias=key_bias)
        self.linear_v = nn.Linear(width, width)
        self.linear_out = nn.Linear(width, width)
        self.linear_pos = nn.Linear(width, width, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, H, T, d_k]
        return x.view(x.shape[0], -1, self.heads, self.d_k).transpose(1, 2)

    def forward(self, x: torch.Tensor, pos: torch.Tensor,
                cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C] (the new frames); pos: [1, 2S-1, C] for S = cached + T keys."""
        q = self._split(self.linear_q(x)).transpose(1, 2)  # [B, T, H, d_k]
        k, v = self._split(self.linear_k(x)), self._split(self.linear_v(x))
        if cache is not None and cache.shape[2] > 0:
            k_old, v_old = cache.split(self.d_k, dim=-1)
            k, v = torch.cat([k_old, k], dim=2), torch.cat([v_old, v], dim=2)
        new_cache = torch.cat([k, v], dim=-1)
        p = self._split(self.linear_pos(pos))  # [1, H, 2S-1, d_k]
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        scores = (content + _relative_to_absolute(position)) / math.sqrt(self.d_k)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, H, T, d_k]
        out = out.transpose(1, 2).reshape(x.shape[0], -1, self.heads * self.d_k)
        return self.linear_out(out), new_cache


def _relative_to_absolute(scores: torch.Tensor) -> torch.Tensor:
    """[B, H, T, 2S-1] scores by relative position -> [B, H, T, S] by key.

    The T queries are the last T of the S keys; query i (absolute S-T+i) and key j are
    S-T+i-j apart, which is column T-1-i+j of the relative table (it runs from S-1 down).
    """
    t, width = scores.shape[2], scores.shape[3]
    s = (width + 1) // 2
    i = torch.arange(t, device=scores.device).unsqueeze(1)
    j = torch.arange(s, device=scores.device).unsqueeze(0)
    index = (t - 1 - i + j).expand(*scores.shape[:2], t, s)
    return scores.gather(-1, index)


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(width, hidden)
        self.w_2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm self-attention then pre-norm feed-forward (no conv module, no macaron)."""

    def __init__(self, width: int, heads: int, hidden: int, key_bias: bool) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(heads, width, key_bias)
        self.feed_forward = FeedForward(width, hidden)
        self.norm_ff = nn.LayerNorm(width, eps=1e-12)
        self.norm_mha = nn.LayerNorm(width, eps=1e-12)

    def forward(self, x: torch.Tensor, pos: torch.Tensor,
                cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        attended, new_cache = self.self_attn(self.norm_mha(x), pos, cache)
        x = x + attended
        return x + self.feed_forward(self.norm_ff(x)), new_cache


class PreLookaheadLayer(nn.Module):
    """Each code sees the next `lookahead` codes (conv1), then the previous two (conv2)."""

    def __init__(self, width: int, lookahead: int) -> None:
        super().__init__()
        self.pre_lookahead_len = lookahead
        self.conv1 = nn.Conv1d(width, width, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3)

    def forward(self, x: torch.Tensor,
                cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C] including `lookahead` codes at the end -> [B, T - lookahead, C]."""
        h = F.leaky_relu(self.conv1(x.transpose(1, 2)))
        if cache is None:
            cache = h.new_zeros(h.shape[0], h.shape[1], 2)
        new_cache = h[..., -2:]
        h = self.conv2(torch.cat([cache, h], dim=2)).transpose(1, 2)
        return h + x[:, :-self.pre_lookahead_len], new_cache


class Upsample(nn.Module):
    """Repeat each frame `stride` times, then a causal conv over 2*stride+1 frames."""

    def __init__(self, width: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(width, width, kernel_size=stride * 2 + 1)

    def forward(self, x: torch.Tensor,
                cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, C, T] -> [B, C, stride*T]; cache: the previous 2*stride repeated frames."""
        up = torch.repeat_interleave(x, self.stride, dim=2)
        if cache is None:
            cache = x.new_zeros(x.shape[0], x.shape[1], 2 * self.stride)
        up = torch.cat([cache, up], dim=2)
        return self.conv(up), up[..., -2 * self.stride:]


class UpsampleConformerEncoder(nn.Module):
    """Embedded codes [B, T, input_size] -> frames [B, 2*(T - lookahead), output_size]."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        width = config.output_size
        self.config = config
        self.embed = LinearEmbed(config.input_size, width)
        self.pre_lookahead_layer = PreLookaheadLayer(width, config.pre_lookahead_len)
        self.encoders = nn.ModuleList(
            ConformerLayer(width, config.attention_heads, config.linear_units, config.key_bias)
            for _ in range(config.num_blocks))
        self.up_layer = Upsample(width, config.up_stride)
        # The published tree's second input layer takes input_size wide frames; the
        # upsampler emits output_size wide ones, so the two sizes must agree to run.
        self.up_embed = LinearEmbed(config.input_size, width)
        self.up_encoders = nn.ModuleList(
            ConformerLayer(width, config.attention_heads, config.linear_units, config.key_bias)
            for _ in range(config.num_up_blocks))
        self.after_norm = nn.LayerNorm(width, eps=1e-5)

    @property
    def lookahead(self) -> int:
        return self.config.pre_lookahead_len

    @property
    def up_rate(self) -> int:
        return self.config.up_stride

    def forward_chunk(self, x: torch.Tensor, cache: ConformerCache | None, *,
                      last: bool) -> tuple[torch.Tensor, ConformerCache]:
        """One chunk. Not `last`: x's final `lookahead` codes only look ahead (they are
        sent again at the start of the next chunk) and give no frames. `last`: zeros
        stand in for the codes after the end, so every code gives frames."""
        n_first = len(self.encoders)
        if cache is not None:
            half = cache.att.shape[3] // 2
            first_cache = [cache.att[i, :, :, :half] for i in range(n_first)]
            up_cache = [cache.att[n_first + i] for i in range(len(self.up_encoders))]
            look_cache, up_conv_cache = cache.cnn[:, :, :2], cache.cnn[:, :, 2:]
        else:
            half = 0
            first_cache = [None] * n_first
            up_cache = [None] * len(self.up_encoders)
            look_cache = up_conv_cache = None

        h = self.embed(x)
        if last:
            h = F.pad(h, (0, 0, 0, self.lookahead))
        h, new_look = self.pre_lookahead_layer(h, look_cache)
        pos = relative_positions(half + h.shape[1], h.shape[2], dtype=h.dtype, device=h.device)
        first_new = []
        for layer, layer_cache in zip(self.encoders, first_cache, strict=True):
            h, kv = layer(h, pos, layer_cache)
            first_new.append(kv)

        h, new_up_conv = self.up_layer(h.transpose(1, 2), up_conv_cache)
        h = self.up_embed(h.transpose(1, 2))
        pos = relative_positions(half * self.up_rate + h.shape[1], h.shape[2], dtype=h.dtype,
                                 device=h.device)
        up_new = []
        for layer, layer_cache in zip(self.up_encoders, up_cache, strict=True):
            h, kv = layer(h, pos, layer_cache)
            up_new.append(kv)
        h = self.after_norm(h)

        # The first stack's cache is written twice over along time so that it stacks with
        # the up stack's (twice as many frames); only its first half is ever read back.
        first = torch.stack(first_new).repeat(1, 1, 1, 2, 1)
        att = torch.cat([first, torch.stack(up_new)], dim=0)
        return h, ConformerCache(cnn=torch.cat([new_look, new_up_conv], dim=2), att=att)
