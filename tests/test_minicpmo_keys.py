"""The full-size MiniCPM-o 4.5 tree, built on the meta device, against the key list.

Every tensor name and shape of our module tree must be the published checkpoint's, as
tests/data/keylists/minicpm-o-4.5.json.gz lists them (the official tree built under its
own transformers, checked against llama.cpp-omni's printed tree; its sources are inside).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from app.model.minicpm_o.config import MiniCPMOConfig
from app.model.minicpm_o.loader import check_keys, expected_shapes, skeleton
from app.model.minicpm_o.tiny import tiny_config_dict

KEYLISTS = Path(__file__).parent / "data" / "keylists"


def _key_list() -> dict[str, tuple[int, ...]]:
    record = json.loads(gzip.decompress((KEYLISTS / "minicpm-o-4.5.json.gz").read_bytes()))
    tensors = record["files"]["model-*.safetensors"]["tensors"]
    return {k: tuple(v) for k, v in tensors.items()}


def full_size_config() -> dict:
    """config.json with the published sizes (the module tree printed in llama.cpp-omni's
    tools/omni/convert/model.txt): Qwen3-8B, SigLIP-so400m/14 (27 layers, the last
    dropped), Whisper-medium's encoder, the 20-layer Llama speech decoder."""
    config = tiny_config_dict()
    config.update(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128)
    config["vision_config"].update(hidden_size=1152, intermediate_size=4304,
                                   num_attention_heads=16, num_hidden_layers=27)
    config["audio_config"].update(d_model=1024, encoder_layers=24, encoder_attention_heads=16,
                                  encoder_ffn_dim=4096)
    config["tts_config"].update(llm_dim=4096, hidden_size=768, intermediate_size=3072,
                                num_attention_heads=12, num_key_value_heads=12,
                                num_hidden_layers=20)
    return config


def test_full_size_tree_matches_the_key_list_name_for_name_and_shape_for_shape():
    want = _key_list()
    got = expected_shapes(skeleton(MiniCPMOConfig.from_dict(full_size_config())))
    check_keys(want, got, Path("<our full-size tree>"))  # names every difference
    assert len(got) == len(want)


def test_full_size_parameter_count():
    model = skeleton(MiniCPMOConfig.from_dict(full_size_config()))
    total = sum(p.numel() for p in model.parameters())
    assert total == sum(_prod(s) for s in _key_list().values())
    assert 9.3e9 < total < 9.4e9


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
