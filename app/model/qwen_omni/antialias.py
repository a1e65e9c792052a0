"""BigVGAN's anti-aliased activation computed in polyphase form: the same sums, fewer ops.

Qwen2.5-Omni's vocoder wraps each of its ~109 SnakeBeta activations in a 2x upsample
(a 12-tap Kaiser-sinc `conv_transpose1d`, one group per channel) and a 2x downsample (the
same filter, a strided grouped `conv1d`), with replicate padding before each. On a CPU
oneDNN runs these depthwise transposed and strided convolutions slowly (about 1.3 ms per
call for ~30k samples, measured), and they were two thirds of the vocoder's time.

The 2x signal need never be interleaved. Upsampling by 2 is two 6-tap filters on the
input (the filter's odd taps make the even output samples, its even taps the odd ones);
SnakeBeta is elementwise, so it runs on the two phases as they are; downsampling by 2
with 12 taps reads the even phase with the filter's odd taps and the odd phase with its
even taps. So each activation becomes one ordinary conv1d (1 channel in, 2 out, 7 taps),
the snake, and one ordinary conv1d (2 in, 1 out, 7 taps), with each channel as a batch
row. Every output sample is the same sum of the same products as transformers' module;
only the order of the additions differs (float32: within 1e-6,
tests/test_qwen_antialias.py). The replicate padding is written out for the phases: the
2x signal's first sample is the even phase's first, its last is the odd phase's last.

`install(vocoder)` swaps each activation's forward for this one, in place; the weights
and the module tree (state dict, parameter names) stay as they are. The loader installs it
where the vocoder runs on a CPU (`for_cpu`); on a GPU the grouped convolutions are fast
and, in 16-bit, accumulate in float32 where these in-place sums would round each step.
"""

from __future__ import annotations

import types

import torch

_TAPS = 12  # transformers' Qwen2_5OmniAntiAliasedActivation1d default, both filters
_RATIO = 2
_HALF = 3  # each phase needs 3 input samples either side of its own


def _polyphase_taps(up: torch.Tensor, down: torch.Tensor) -> tuple[list[float], ...]:
    """The four 6-tap filters, as Python floats (each tap is one fused multiply-add).

    Derived from transformers' padding and cropping for ratio 2 and 12 taps, with x
    replicate-padded by 3: the even output sample m is sum_s 2 f[11-2s] x[m+s], the odd
    one sum_s 2 f[10-2s] x[m+1+s] (s = 0..5); with both phases padded by 3, the
    downsampled sample m is sum_r g[2r+1] even[m+1+r] + sum_r g[2r] odd[m+r].
    """
    f = up.reshape(-1).double()
    g = down.reshape(-1).double()
    up_even = (2 * f.flip(0)[0::2]).tolist()  # f[11], f[9], ..., f[1]
    up_odd = (2 * f.flip(0)[1::2]).tolist()  # f[10], f[8], ..., f[0]
    return up_even, up_odd, g[1::2].tolist(), g[0::2].tolist()


def _fir(out: torch.Tensor, x: torch.Tensor, taps: list[float], first: int) -> None:
    """out = sum_s taps[s] * x[..., first+s : first+s+len(out)], in place."""
    n = out.shape[-1]
    torch.mul(x[..., first : first + n], taps[0], out=out)
    for s, tap in enumerate(taps[1:], start=first + 1):
        out.add_(x[..., s : s + n], alpha=tap)


def _edges(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """x (..., T) with `_HALF` copies of `left`/`right` (..., 1) on each side."""
    shape = (*x.shape[:-1], _HALF)
    return torch.cat([left.expand(shape), x, right.expand(shape)], dim=-1)


def _snake(act: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' SnakeBeta, x + 1/(e^beta + eps) * sin(x e^alpha)^2, in four passes
    over x instead of six (its per-channel factors computed once per call)."""
    if not hasattr(act, "alpha") or not hasattr(act, "beta"):
        return act(x)
    freq = torch.exp(act.alpha)[None, :, None]
    gain = (1.0 / (torch.exp(act.beta) + act.no_div_by_zero))[None, :, None]
    wave = torch.sin(x * freq)
    return torch.addcmul(x, wave.mul_(wave), gain)


def _forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    b, c, t = hidden_states.shape
    up_even, up_odd, down_even, down_odd = self._polyphase
    rows = hidden_states.reshape(b * c, t)
    padded = _edges(rows, rows[:, :1], rows[:, -1:])
    phases = hidden_states.new_empty(b * c, 2, t)  # even and odd samples of the 2x signal
    _fir(phases[:, 0], padded, up_even, 0)
    _fir(phases[:, 1], padded, up_odd, 1)
    # SnakeBeta is elementwise with per-channel parameters: each channel's two phases
    # side by side are just a longer row for it.
    phases = _snake(self.act, phases.reshape(b, c, 2 * t)).reshape(b * c, 2, t)
    first = phases[:, 0, :1]  # the 2x signal's first sample (even[0])
    last = phases[:, 1, -1:]  # and its last (odd[t-1])
    even = _edges(phases[:, 0], first, last)
    odd = _edges(phases[:, 1], first, last)
    out = hidden_states.new_empty(b * c, t)
    _fir(out, even, down_even, 1)
    low = hidden_states.new_empty(b * c, t)
    _fir(low, odd, down_odd, 0)
    return out.add_(low).reshape(b, c, t)


def install(vocoder: torch.nn.Module) -> int:
    """Compute every anti-aliased activation of `vocoder` in polyphase form. Returns how
    many were swapped (modules with other ratios or tap counts keep transformers' code)."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
        Qwen2_5OmniAntiAliasedActivation1d,
    )

    count = 0
    for module in vocoder.modules():
        if not isinstance(module, Qwen2_5OmniAntiAliasedActivation1d):
            continue
        up, down = module.upsample, module.downsample
        if (up.ratio, up.kernel_size, down.stride, down.kernel_size) != (
                _RATIO, _TAPS, _RATIO, _TAPS):
            continue
        module._polyphase = _polyphase_taps(up.filter, down.filter)
        module.forward = types.MethodType(_forward, module)
        count += 1
    return count


def for_cpu(token2wav: torch.nn.Module) -> int:
    """`install` on token2wav's vocoder when its weights are on the CPU; else nothing."""
    vocoder = token2wav.code2wav_bigvgan_model
    if next(vocoder.parameters()).device.type != "cpu":
        return 0
    return install(vocoder)
