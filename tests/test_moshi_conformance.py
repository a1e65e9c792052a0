"""Conformance with Kyutai's own `moshi` package, where it is installed (it is not a
dependency: it pulls sentencepiece, einops, sphn). Checked by hand on moshi 0.2.13:
all pass; elsewhere they skip with the reason.

The tiny checkpoint written in the moshi layout loads into the package's own LMModel
and MimiModel (strict), and Duetto's stepper, greedy, yields the very tokens of the
package's LMGen frame by frame: same layout mapping, delays, initial tokens, depth
transformer and output alignment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

lm_module = pytest.importorskip("moshi.models.lm", reason="Kyutai's moshi package is not installed")

from safetensors.torch import load_file  # noqa: E402

from app.model.moshi import tiny  # noqa: E402
from app.model.moshi.engine import Sampling, Stepper  # noqa: E402

SEED = 3


def _kyutai_lm(folder: Path):
    cfg = json.loads((folder / "config.json").read_text())
    lm = lm_module.LMModel(
        delays=cfg["delays"], n_q=16, dep_q=cfg["dep_q"], card=tiny.TINY_CARD,
        text_card=tiny.TINY_TEXT_VOCAB, dim=64, num_heads=tiny.HEADS, num_layers=2,
        hidden_scale=4.5, norm="rms_norm_f32", causal=True, context=3000, max_period=10000,
        gating="silu", positional_embedding="rope", layer_scale=None,
        depformer_dim=32, depformer_dim_feedforward=int(4.125 * 32),
        depformer_num_heads=tiny.DEPTH_HEADS, depformer_num_layers=1,
        depformer_multi_linear=True, depformer_context=8, depformer_max_period=10000,
        depformer_gating="silu", depformer_pos_emb="none", depformer_weights_per_step=True,
        depformer_layer_scale=None,
    ).eval()
    lm.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return lm


def test_greedy_steps_match_kyutai_lmgen(tmp_path: Path) -> None:
    folder = tiny.build_tiny_moshi_format(tmp_path / "m", seed=SEED, dep_q=8)
    generator = lm_module.LMGen(_kyutai_lm(folder), use_sampling=False)
    stepper = Stepper(tiny._tiny_model(SEED), tiny.STANDARD_DELAYS,
                      Sampling(temp_text=0, temp_audio=0))
    gen = torch.Generator().manual_seed(0)
    compared = 0
    with generator.streaming(1):
        for _ in range(16):
            user = torch.randint(0, tiny.TINY_CARD, (8,), generator=gen)
            ref = generator.step(user.view(1, 8, 1))
            mine = stepper.step(user)
            assert (ref is None) == (mine is None)
            if ref is not None:
                assert ref[0, :, 0].tolist() == [mine.text, *mine.codes.tolist()]
                compared += 1
    assert compared == 15


def test_mimi_matches_kyutai_mimi(tmp_path: Path) -> None:
    from moshi.models.compression import MimiModel
    from moshi.modules import SEANetDecoder, SEANetEncoder, transformer
    from moshi.quantization import SplitResidualVectorQuantizer

    folder = tiny.build_tiny_moshi_format(tmp_path / "m", seed=SEED)
    mimi_config = tiny.tiny_mimi_config()
    seanet = dict(channels=1, dimension=32, causal=True, n_filters=4, n_residual_layers=1,
                  activation="ELU", compress=2, dilation_base=2, disable_norm_outer_blocks=0,
                  kernel_size=7, residual_kernel_size=3, last_kernel_size=3, norm="none",
                  pad_mode="constant", ratios=mimi_config["upsampling_ratios"], true_skip=True)
    layers = dict(d_model=32, num_heads=tiny.MIMI_HEADS, num_layers=1, causal=True,
                  layer_scale=0.01, context=250, conv_layout=True, max_period=10000,
                  gating="none", norm="layer_norm", positional_embedding="rope",
                  dim_feedforward=64, input_dimension=32, output_dimensions=[32])
    kyutai = MimiModel(
        SEANetEncoder(**seanet), SEANetDecoder(**seanet),
        SplitResidualVectorQuantizer(dimension=16, n_q=8, bins=tiny.TINY_CARD,
                                     input_dimension=32, output_dimension=32),
        channels=1, sample_rate=24000, frame_rate=12.5, encoder_frame_rate=25.0, causal=True,
        resample_method="conv", encoder_transformer=transformer.ProjectedTransformer(**layers),
        decoder_transformer=transformer.ProjectedTransformer(**layers),
    ).eval()
    kyutai.load_state_dict(load_file(str(folder / tiny.MIMI_FILE)), strict=True)
    ours = tiny._tiny_model(SEED).audio_encoder
    audio = 0.1 * torch.randn(1, 1, 1920 * 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codes = kyutai.encode(audio)
        assert torch.equal(codes, ours.encode(audio, num_quantizers=8).audio_codes)
        assert torch.allclose(kyutai.decode(codes), ours.decode(codes).audio_values, atol=1e-5)
