"""Our polyphase anti-aliased activation (app/model/qwen_omni/antialias.py) against
transformers' Qwen2.5-Omni module: same outputs within float32 rounding."""

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

from app.model.qwen_omni import antialias


def _activation(channels: int, seed: int) -> Qwen2_5OmniAntiAliasedActivation1d:
    torch.manual_seed(seed)
    act = Qwen2_5OmniAntiAliasedActivation1d(Qwen2_5OmniSnakeBeta(channels))
    with torch.no_grad():  # trained-looking snake parameters (zeros make it near-linear)
        act.act.alpha.normal_(0, 0.5)
        act.act.beta.normal_(0, 0.5)
    return act


@pytest.mark.parametrize(("batch", "channels", "length"), [(1, 8, 40), (2, 3, 7), (1, 1, 1)])
def test_one_activation_matches_transformers(batch, channels, length) -> None:
    reference = _activation(channels, seed=length)
    ours = copy.deepcopy(reference)
    assert antialias.install(ours) == 1
    x = torch.randn(batch, channels, length) * 3
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape
    # Same sums of the same products; only the order of additions differs.
    assert (got - expected).abs().max().item() < 1e-5


def test_a_whole_vocoder_matches_transformers() -> None:
    torch.manual_seed(0)
    config = Qwen2_5OmniBigVGANConfig(
        mel_dim=80, upsample_initial_channel=64, upsample_rates=[5, 3, 2, 2, 2, 2],
        upsample_kernel_sizes=[11, 7, 4, 4, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    reference = Qwen2_5OmniToken2WavBigVGANModel(config).eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, Qwen2_5OmniSnakeBeta):
                module.alpha.normal_(0, 0.5)
                module.beta.normal_(0, 0.5)
    mel = torch.randn(1, 80, 30)
    with torch.no_grad():  # random weights are nearly silent: scale to 0.3 at most
        reference.conv_post.weight.mul_(0.3 / reference(mel).abs().max())
    ours = copy.deepcopy(reference)
    assert antialias.install(ours) == 6 * 3 * 6 + 1  # every activation
    with torch.no_grad():
        expected, got = reference(mel), ours(mel)
    assert expected.abs().max().item() > 0.05
    assert (got - expected).abs().max().item() < 1e-5
    # The module tree is untouched: the same parameters under the same names.
    assert ours.state_dict().keys() == reference.state_dict().keys()
