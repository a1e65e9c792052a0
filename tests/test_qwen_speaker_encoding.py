"""The DiT's speaker encoder kept per reference (app/model/qwen_omni/speaker_encoding.py):
the DiT computes exactly what transformers' computes, with the encoder run once per input."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniToken2WavDiTModel

from app.model.qwen_omni import speaker_encoding
from app.model.qwen_omni.tiny import _tiny_config, tiny_vocab

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_dit_is_unchanged_and_encodes_each_reference_once() -> None:
    config = _tiny_config(tiny_vocab()).token2wav_config.dit_config
    torch.manual_seed(0)
    reference = Qwen2_5OmniToken2WavDiTModel(config).eval()
    ours = copy.deepcopy(reference)
    assert speaker_encoding.install(ours)
    assert not speaker_encoding.install(ours)  # once only
    encoder = ours.input_embed.spk_encoder
    runs = []
    uncached = encoder._uncached_forward
    encoder._uncached_forward = lambda x: runs.append(x.shape[0]) or uncached(x)

    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, config.num_embeds - 4, (1, 30), generator=g)
    x = torch.randn(1, 60, config.mel_dim, generator=g)
    speakers = [(torch.randn(1, config.enc_emb_dim, generator=g),
                 torch.randn(1, 40, config.mel_dim, generator=g)) for _ in range(2)]
    with torch.no_grad():
        for step in range(2):  # flow steps: same reference, other inputs
            t = torch.tensor(step / 3)
            for cond, ref_mel in speakers:  # speakers take turns
                for cfg in (True, False):
                    args = dict(hidden_states=x + step,
                                speaker_embedding=cond.unsqueeze(1).repeat(1, 60, 1),
                                condition_vector=ref_mel, quantized_code=codes, time_step=t,
                                apply_cfg=cfg)
                    assert torch.equal(ours(**args), reference(**args))
    # Two speakers, with and without guidance: four distinct inputs, each encoded once.
    assert sorted(runs) == [1, 1, 2, 2]
