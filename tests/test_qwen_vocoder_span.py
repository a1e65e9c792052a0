"""The vocoder with each layer cut to the kept frames (app/model/qwen_omni/vocoder_span.py)
against transformers' whole-window forward: the same samples within rounding."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniBigVGANConfig
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
    Qwen2_5OmniAntiAliasedActivation1d,
    Qwen2_5OmniSnakeBeta,
    Qwen2_5OmniToken2WavBigVGANModel,
)

from app.model.qwen_omni import antialias, vocoder_span

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vocoder(blocks: list[int]) -> Qwen2_5OmniToken2WavBigVGANModel:
    """Three of the real vocoder's six stages (rates 5, 3, 2 and their kernels), few
    channels: every kind of layer and cut, at a small cost."""
    torch.manual_seed(0)
    config = Qwen2_5OmniBigVGANConfig(
        mel_dim=20, upsample_initial_channel=16, upsample_rates=[5, 3, 2],
        upsample_kernel_sizes=[11, 7, 4], resblock_kernel_sizes=blocks,
        resblock_dilation_sizes=[[1, 3, 5]] * len(blocks))
    vocoder = Qwen2_5OmniToken2WavBigVGANModel(config).eval()
    with torch.no_grad():
        for module in vocoder.modules():
            if isinstance(module, Qwen2_5OmniSnakeBeta):
                module.alpha.normal_(0, 0.5)
                module.beta.normal_(0, 0.5)
    return vocoder


@pytest.mark.parametrize("blocks", [[3, 7, 11], [11]])
@pytest.mark.parametrize("polyphase", [False, True])
def test_kept_samples_match_the_whole_window(blocks, polyphase) -> None:
    # In float64, so that a cut one sample too near shows above the rounding: the values
    # that cut would change reach the kept samples through the filters' outer taps only.
    vocoder = _vocoder(blocks).double()
    if polyphase:
        antialias.install(vocoder)
    assert vocoder_span.needs_of(vocoder)
    # Long enough that even the first layers are cut: their reach is about 20 frames.
    mel = torch.randn(1, 20, 90, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    per_frame = 30
    with torch.no_grad():  # random weights are nearly silent: scale to 0.3 at most
        vocoder.conv_post.weight.mul_(0.3 / vocoder(mel).abs().max())
    with torch.inference_mode():
        whole = vocoder(mel).reshape(-1)
        assert whole.abs().max().item() > 0.05
        # Steady windows keep the middle; the first and last touch the window's edges.
        for keep in [(40, 50), (44, 45), (0, 12), (70, 90), (0, 90), (89, 90), (30, 60)]:
            got = vocoder_span.vocode_span(vocoder, mel, keep)
            want = whole[keep[0] * per_frame : keep[1] * per_frame]
            assert got.shape == want.shape, keep
            assert (got - want).abs().max().item() < 1e-12, keep


@pytest.mark.parametrize(("kernel", "stride", "dilation"),
                         [(11, 5, 1), (7, 3, 1), (4, 2, 1), (11, 1, 5), (7, 1, 1)])
def test_each_layer_reads_what_its_need_says(kernel, stride, dilation) -> None:
    """Perturb each input sample of a layer as the vocoder builds it: the first and last
    that move output samples [lo, hi) are the ends of the span the need names. (The whole vocoder
    cannot show a need one sample short: what it would miss reaches the kept samples
    through the filters' outermost taps only, below any rounding.)"""
    torch.manual_seed(kernel + stride)
    if stride > 1:
        layer = torch.nn.ConvTranspose1d(1, 1, kernel, stride, padding=(kernel - stride) // 2)
        need = vocoder_span._upsample_need
    else:
        layer = torch.nn.Conv1d(1, 1, kernel, dilation=dilation,
                                padding=dilation * (kernel - 1) // 2)
        need = vocoder_span._same_conv_need
    x = torch.randn(1, 1, 80, dtype=torch.float64)
    layer = layer.double()
    with torch.no_grad():
        base = layer(x)
        length = base.shape[-1]
        for lo, hi in [(length // 3, length // 3 + 8), (length // 2, length // 2 + 1), (0, 3)]:
            read = set()
            for j in range(x.shape[-1]):
                moved = x.clone()
                moved[..., j] += 1.0
                if (layer(moved) - base)[..., lo:hi].abs().max().item() > 0:
                    read.add(j)
            want = need(layer, (lo, hi))
            # A dilated convolution reads every dilation-th sample between the two ends.
            assert (min(read), max(read) + 1) == (max(0, want[0]), want[1]), (lo, hi)


def test_an_activation_reads_as_far_as_the_span_assumes() -> None:
    """transformers' anti-aliased activation (2x, 12 taps): a change in one input sample
    moves outputs up to ACTIVATION_REACH samples away, and no further."""
    torch.manual_seed(0)
    act = Qwen2_5OmniAntiAliasedActivation1d(Qwen2_5OmniSnakeBeta(1))
    x = torch.randn(1, 1, 64)
    moved = x.clone()
    moved[..., 32] += 1.0
    with torch.no_grad():
        changed = ((act(moved) - act(x)).abs().reshape(-1) > 0).nonzero().reshape(-1) - 32
    assert changed.min().item() == -vocoder_span.ACTIVATION_REACH
    assert changed.max().item() == vocoder_span.ACTIVATION_REACH


def test_other_layouts_keep_the_whole_window() -> None:
    vocoder = copy.deepcopy(_vocoder([11]))
    vocoder.resblocks[0].convs1[0].padding = (0,)  # not a "same" convolution
    assert not vocoder_span.needs_of(vocoder)
