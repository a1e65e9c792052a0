"""BigVGAN on a window of mel frames, each layer computed only where the kept samples need it.

VoiceStream vocodes a window with `vocoder_context` frames of context on both sides and
keeps the samples of its middle frames (voice.py). transformers' vocoder computes every
layer over the whole window, yet the context is only needed by the first layers: the
later ones run at 15 to 240 samples per frame, where their kernels reach a fraction of a
frame. Going back from the kept samples, each layer's needed span is what the layers
after it read (their kernels, dilations and strides); the forward pass here cuts each
layer's output to that span. Every layer is shift-equivariant and each output value is
a sum over inputs within its reach, so each kept value is the same sum of the same
products as in the whole window's forward: a cut never comes nearer to a needed value
than the reach of the layers still to run, and the zero or replicate padding a layer
puts at a cut edge only changes values that the next cut drops. Where the window's own
edge is not cut, the padding there is the whole window's, as before.

On the tiny vocoder (six stages, 96-frame windows keeping 48 frames) the later stages'
work fell to about half. transformers' forward is the reference (tests/test_qwen_speech.py
streams with this and compares with one pass over the whole mel).

`needs_of(vocoder)` says whether the vocoder is of the layout this knows (stride-1
"same" convolutions in the AMP blocks, the anti-aliased activations of ratio 2 and 12
taps); VoiceStream uses the plain forward where it is not.
"""

from __future__ import annotations

import torch
from torch import nn

Span = tuple[int, int]  # [lo, hi) in samples of a layer's rate, from the window's first sample

# An anti-aliased activation (2x up, SnakeBeta, 2x down, 12-tap filters) reads 5 input
# samples either side: in antialias.py's polyphase form the even phase at j reads x[j-3 ..
# j+2], the odd one x[j-2 .. j+3], and output m reads even[m-2 .. m+3] and odd[m-3 .. m+2]
# (tests/test_qwen_vocoder_span.py perturbs transformers' module to check it).
ACTIVATION_REACH = 5
_ACTIVATION_LAYOUT = (2, 12, 2, 12)


def _same_conv_need(conv: nn.Conv1d, span: Span) -> Span:
    (pad,), (dil,), (k,) = conv.padding, conv.dilation, conv.kernel_size
    return span[0] - pad, span[1] - pad + dil * (k - 1)


def _activation_need(span: Span) -> Span:
    return span[0] - ACTIVATION_REACH, span[1] + ACTIVATION_REACH


def _upsample_need(up: nn.ConvTranspose1d, span: Span) -> Span:
    """Input samples that output samples [lo, hi) of a transposed convolution read."""
    (stride,), (pad,), (k,) = up.stride, up.padding, up.kernel_size
    # Output sample m is sum over j, t of x[j] w[t] with j * stride + t = m + pad, 0 <= t < k.
    lo = -(-(span[0] + pad - k + 1) // stride)
    hi = (span[1] - 1 + pad) // stride + 1
    return lo, hi


def _union(a: Span, b: Span) -> Span:
    return min(a[0], b[0]), max(a[1], b[1])


def _cut(x: torch.Tensor, start: int, span: Span) -> tuple[torch.Tensor, int]:
    """The part of x (holding samples [start, start + len)) inside span, and its start."""
    lo = max(span[0], start)
    hi = min(span[1], start + x.shape[-1])
    return x[..., lo - start : hi - start], lo


def needs_of(vocoder: nn.Module) -> bool:
    """Whether `vocoder` has the layout `vocode_span` computes exactly."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
        Qwen2_5OmniAntiAliasedActivation1d,
    )

    for module in vocoder.modules():
        if isinstance(module, Qwen2_5OmniAntiAliasedActivation1d):
            up, down = module.upsample, module.downsample
            if (up.ratio, up.kernel_size, down.stride, down.kernel_size) != _ACTIVATION_LAYOUT:
                return False
        elif isinstance(module, nn.Conv1d):
            (pad,), (dil,), (k,), (stride,) = (module.padding, module.dilation,
                                               module.kernel_size, module.stride)
            if stride != 1 or 2 * pad != dil * (k - 1):
                return False
    return True


def _block_needs(block: nn.Module, out_need: Span) -> tuple[Span, list[Span]]:
    """What an AMP block's input must hold for its output to hold `out_need`, and each of
    its layers' output needs."""
    out_needs: list[Span] = []
    need = out_need
    for conv1, conv2 in reversed(list(zip(block.convs1, block.convs2, strict=True))):
        out_needs.append(need)
        branch = _activation_need(_same_conv_need(
            conv1, _activation_need(_same_conv_need(conv2, need))))
        # The residual reads the layer's input where it writes, inside the branch's reach.
        need = _union(branch, need)
    return need, out_needs[::-1]


def _amp_block(block: nn.Module, x: torch.Tensor, start: int,
               out_need: Span) -> tuple[torch.Tensor, int]:
    """transformers' Qwen2_5OmniAMPBlock.forward, each layer cut to what follows needs."""
    layers = zip(block.convs1, block.convs2, block.activations[::2], block.activations[1::2],
                 _block_needs(block, out_need)[1], strict=True)
    for conv1, conv2, act1, act2, out in layers:
        into_conv2 = _same_conv_need(conv2, out)
        into_act2 = _activation_need(into_conv2)
        into_conv1 = _same_conv_need(conv1, into_act2)
        h, at = _cut(x, start, _activation_need(into_conv1))
        h, at = _cut(act1(h), at, into_conv1)
        h, at = _cut(conv1(h), at, into_act2)
        h, at = _cut(act2(h), at, into_conv2)
        h, at = _cut(conv2(h), at, out)
        residual, _ = _cut(x, start, (at, at + h.shape[-1]))
        x, start = residual + h, at
    return x, start


def _stage_input_need(vocoder: nn.Module, stage: int, out_need: Span) -> Span:
    """What a stage's AMP blocks (summed) read for their output to hold `out_need`."""
    blocks = vocoder.num_residual_blocks
    need = out_need
    for j in range(blocks):
        need = _union(need, _block_needs(vocoder.resblocks[stage * blocks + j], out_need)[0])
    return need


def vocode_span(vocoder: nn.Module, mel: torch.Tensor, keep: Span) -> torch.Tensor:
    """transformers' BigVGAN forward on `mel` (1, mel_dim, frames), returning only the
    waveform of frames [keep[0], keep[1]) (1-D, on the CPU, as the forward returns it)."""
    ups = [u[0] for u in vocoder.ups]
    blocks = vocoder.num_residual_blocks
    per_frame = 1
    for up in ups:
        per_frame *= up.stride[0]
    kept = (keep[0] * per_frame, keep[1] * per_frame)

    # Back from the kept samples: what each stage's output must hold.
    post_need = _same_conv_need(vocoder.conv_post, kept)
    stage_out: list[Span] = []
    need = _activation_need(post_need)
    for i in reversed(range(len(ups))):
        stage_out.append(need)
        need = _upsample_need(ups[i], _stage_input_need(vocoder, i, need))
    stage_out.reverse()

    x, start = _cut(vocoder.process_mel_spectrogram(mel), 0,
                    _same_conv_need(vocoder.conv_pre, need))
    x, start = _cut(vocoder.conv_pre(x), start, need)
    for i, up in enumerate(ups):
        x, start = _cut(up(x), start * up.stride[0],
                        _stage_input_need(vocoder, i, stage_out[i]))
        outs = [_amp_block(vocoder.resblocks[i * blocks + j], x, start, stage_out[i])
                for j in range(blocks)]
        start = outs[0][1]
        x = sum(out for out, _ in outs) / blocks  # as transformers sums them
    x, start = _cut(vocoder.activation_post(x), start, post_need)
    x, start = _cut(vocoder.conv_post(x), start, kept)
    return torch.clamp(x, min=-1.0, max=1.0).reshape(-1).cpu()
