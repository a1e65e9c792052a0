"""Our streaming forward over the Whisper encoder's layers (`apm`), with a KV cache.

transformers' WhisperEncoder holds the right layers (conv stem, position table, 24
pre-norm layers, final LayerNorm) but its forward wants 30 s of audio and keeps no cache.
MiniCPM-o streams one unit (1 s, 50 encoder frames) at a time: every frame attends to
all frames of this unit and of the earlier ones (no mask), through keys and values kept
per layer; positions continue from the cache's length. As the official code does, the
cache is dropped when the next unit would run past the position table (1500 frames,
30 s), and positions start again from 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WhisperCache:
    """Per-layer keys and values [1, heads, frames, head_dim] of the units so far."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0

    def clear(self) -> None:
        self.keys.clear()
        self.values.clear()

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=2)
        return self.keys[layer], self.values[layer]


def conv_stem(apm: nn.Module, mel: torch.Tensor, prefix: int, suffix: int) -> torch.Tensor:
    """[1, n_mels, T] -> [1, frames, d]; the context frames' outputs cut off.

    conv2 has stride 2, so `prefix`/`suffix` context mel frames make ceil(x/2) outputs.
    """
    weight = apm.conv1.weight
    x = F.gelu(apm.conv1(mel.to(weight.device, weight.dtype)))
    x = F.gelu(apm.conv2(x))
    cut_front = (prefix + 1) // 2 if prefix > 0 else 0
    cut_back = (suffix + 1) // 2 if suffix > 0 else 0
    if cut_front:
        x = x[:, :, cut_front:]
    if 0 < cut_back < x.shape[2]:
        x = x[:, :, :-cut_back]
    return x.transpose(1, 2)


def _layer_step(layer: nn.Module, hidden: torch.Tensor, cache: WhisperCache, index: int,
                heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One WhisperEncoderLayer over the new frames, attending to cached ones too
    (`mask`: which keys each frame may see, True = visible; None = all)."""
    attn = layer.self_attn
    batch, frames, width = hidden.shape
    head_dim = width // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, frames, heads, head_dim).transpose(1, 2)

    residual = hidden
    x = layer.self_attn_layer_norm(hidden)
    q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
    k, v = cache.extend(index, k, v)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=head_dim**-0.5)
    hidden = residual + attn.out_proj(out.transpose(1, 2).reshape(batch, frames, width))
    residual = hidden
    x = layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden)))
    hidden = residual + layer.fc2(x)
    if hidden.dtype == torch.float16 and not torch.isfinite(hidden).all():
        # As the official layer does on float16 cards: clamp an overflow to the range.
        limit = torch.finfo(torch.float16).max - 1000
        hidden = hidden.clamp(min=-limit, max=limit)
    return hidden


def encode_unit(apm: nn.Module, mel: torch.Tensor, cache: WhisperCache, *, prefix: int,
                suffix: int) -> torch.Tensor:
    """One unit's mel (with `prefix`/`suffix` context frames) -> [1, frames, d]."""
    positions = apm.embed_positions.weight
    conv_len = (mel.shape[-1] - 1) // 2 + 1  # conv2's output length, context included
    if len(cache) and len(cache) + conv_len >= positions.shape[0]:
        cache.clear()  # the official reset: the table would run out
    hidden = conv_stem(apm, mel, prefix, suffix)
    start = len(cache)
    if start + hidden.shape[1] > positions.shape[0]:
        raise ValueError(f"{hidden.shape[1]} audio frames do not fit the encoder's "
                         f"{positions.shape[0]} positions")
    hidden = hidden + positions[start:start + hidden.shape[1]]
    heads = int(apm.config.encoder_attention_heads)
    for index, layer in enumerate(apm.layers):
        hidden = _layer_step(layer, hidden, cache, index, heads)
    return apm.layer_norm(hidden)


def encode_clip(apm: nn.Module, mel: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """A whole clip's mel [1, n_mels, T] at once (no cache) -> [1, frames, d].

    The official offline path for audio of known length (the system prompt's reference
    voice): each frame attends to every frame up to the end of its own `chunk_frames`
    block, as the streaming units would have let it.
    """
    hidden = conv_stem(apm, mel, 0, 0)
    frames = hidden.shape[1]
    positions = apm.embed_positions.weight
    if frames > positions.shape[0]:
        raise ValueError(f"{frames} audio frames do not fit the encoder's "
                         f"{positions.shape[0]} positions")
    hidden = hidden + positions[:frames]
    block_end = (torch.arange(frames, device=hidden.device) // chunk_frames + 1) * chunk_frames
    mask = torch.arange(frames, device=hidden.device)[None, :] < block_end[:, None]
    heads = int(apm.config.encoder_attention_heads)
    scratch = WhisperCache()
    for index, layer in enumerate(apm.layers):
        hidden = _layer_step(layer, hidden, scratch, index, heads, mask)
    return apm.layer_norm(hidden)
