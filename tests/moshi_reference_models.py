"""Kyutai's own LMModel and MimiModel in the tiny checkpoint's shapes (app/model/moshi/tiny.py).

Used where Kyutai's `moshi` package is importable: by scripts/moshi_reference.py, which
records the package's outputs as golden data, and by the live conformance tests, which
run only where the package is installed. Nothing here is imported without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from app.model.moshi import tiny


def kyutai_lm(lm_module, folder: Path, state: Mapping[str, torch.Tensor]):
    """moshi.models.lm.LMModel with the tiny checkpoint's settings, `state` loaded strictly."""
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
    lm.load_state_dict(dict(state), strict=True)
    return lm


def kyutai_mimi(state: Mapping[str, torch.Tensor]):
    """moshi.models.compression.MimiModel with the tiny Mimi's settings, `state` loaded."""
    from moshi.models.compression import MimiModel
    from moshi.modules import SEANetDecoder, SEANetEncoder, transformer
    from moshi.quantization import SplitResidualVectorQuantizer

    mimi_config = tiny.tiny_mimi_config()
    seanet = dict(channels=1, dimension=32, causal=True, n_filters=4, n_residual_layers=1,
                  activation="ELU", compress=2, dilation_base=2, disable_norm_outer_blocks=0,
                  kernel_size=7, residual_kernel_size=3, last_kernel_size=3, norm="none",
                  pad_mode="constant", ratios=mimi_config["upsampling_ratios"], true_skip=True)
    layers = dict(d_model=32, num_heads=tiny.MIMI_HEADS, num_layers=1, causal=True,
                  layer_scale=0.01, context=250, conv_layout=True, max_period=10000,
                  gating="none", norm="layer_norm", positional_embedding="rope",
                  dim_feedforward=64, input_dimension=32, output_dimensions=[32])
    mimi = MimiModel(
        SEANetEncoder(**seanet), SEANetDecoder(**seanet),
        SplitResidualVectorQuantizer(dimension=16, n_q=8, bins=tiny.TINY_CARD,
                                     input_dimension=32, output_dimension=32),
        channels=1, sample_rate=24000, frame_rate=12.5, encoder_frame_rate=25.0, causal=True,
        resample_method="conv", encoder_transformer=transformer.ProjectedTransformer(**layers),
        decoder_transformer=transformer.ProjectedTransformer(**layers),
    ).eval()
    mimi.load_state_dict(dict(state), strict=True)
    return mimi
