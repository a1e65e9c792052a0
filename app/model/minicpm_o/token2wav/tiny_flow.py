"""A tiny random token2wav flow in the published file layout (flow.yaml + flow.pt).

Narrow everywhere (32-wide encoder and DiT instead of 512), but with everything that
shapes the stream as published: 80 mel bins, a 192-wide speaker embedding, the 6,561
code vocabulary (the silence code 4218 included), the pre-look-ahead of 3 codes, the 2x
upsampling, the conformer's 6 + 4 layers, the DiT's causal conv kernel and per-step
caches, the guidance rate 0.7. So chunk sizes, frame counts, cache lengths and the cache
trimming are those of the real model, and only the arithmetic per frame is smaller.

One count is cut: the DiT has 2 blocks, not 16. It runs twice per solver step (with and
without guidance) and 10 steps per chunk, so its depth is most of the tiny flow's time on
a CPU, where the tiny model runs inside real-time benchmarks; every block keeps its own
caches exactly as the 16 do (the full-size tree is checked against the published key
list separately).
"""

from __future__ import annotations

from pathlib import Path

import torch

from app.model.building import building
from app.model.minicpm_o.token2wav.flow import FlowModel
from app.model.minicpm_o.token2wav.flow_yaml import (
    EncoderConfig,
    EstimatorConfig,
    FlowConfig,
    flow_yaml_text,
)

TINY_WIDTH = 32


def tiny_flow_config() -> FlowConfig:
    encoder = EncoderConfig(input_size=TINY_WIDTH, output_size=TINY_WIDTH, pre_lookahead_len=3,
                            num_blocks=6, num_up_blocks=4, up_stride=2, up_scale_factor=2.0,
                            attention_heads=2, key_bias=True, linear_units=2 * TINY_WIDTH,
                            attention_dropout_rate=0.1)
    estimator = EstimatorConfig(in_channels=320, out_channels=80, mlp_ratio=2.0, depth=2,
                                num_heads=2, head_dim=16, hidden_size=TINY_WIDTH)
    return FlowConfig(encoder=encoder, estimator=estimator, input_size=TINY_WIDTH,
                      output_size=80, spk_embed_dim=192, output_type="mel", vocab_size=6561,
                      inference_cfg_rate=0.7)


def tiny_flow_state(config: FlowConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random weights scaled so activations stay near unit size through every layer
    (the reference's own init zeroes the DiT's output and modulation layers, which would
    make every mel the noise itself and hide a wrong DiT)."""
    generator = torch.Generator().manual_seed(seed)
    with building(torch.float32), torch.device("meta"):
        model = FlowModel(config)
    state = {}
    for name, tensor in model.state_dict().items():
        shape = tensor.shape
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        if name.endswith("input_embedding.weight"):
            value = noise
        elif len(shape) >= 2:
            fan_in = shape[1:].numel()
            value = noise / fan_in ** 0.5
        elif _is_norm(name):
            value = 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
        else:
            value = 0.1 * noise
        state[name] = value.contiguous()
    return state


def _is_norm(name: str) -> bool:
    parts = name.split(".")
    return any(p.startswith("norm") or p in {"after_norm", "q_norm", "k_norm"} for p in parts) \
        or name.endswith(("out.1.weight", "out.1.bias", "block.3.weight", "block.3.bias"))


def write_tiny_flow(folder: Path, seed: int = 0) -> Path:
    """Write flow.yaml and flow.pt (a plain state dict, as published) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_flow_config()
    (folder / "flow.yaml").write_text(flow_yaml_text(config), encoding="utf-8")
    torch.save(tiny_flow_state(config, seed), folder / "flow.pt")
    return folder
