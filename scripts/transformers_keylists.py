"""Tensor names and shapes of published transformers-layout checkpoints, from transformers'
own classes built on the meta device from the published configurations (offline, seconds).

Writes tests/data/keylists/{qwen2.5-omni-3b,qwen2.5-omni-7b,hf-moshiko}.json.gz. The names
are those of the checkpoint files: transformers' own save rule
(`revert_weight_conversion`, what `save_pretrained` applies) turns the module tree's names
into the file layout (for Qwen2.5-Omni, `thinker.model.audio_tower.*` is stored as
`thinker.audio_tower.*`, as in the published files). Duetto's loaders are not used here:
the tests map these lists through them.

The configurations are below, each value with where it was read; Duetto's own size
tables (app/model/qwen_omni/sizes.py) are deliberately not used, so the tests can check
them against these.

    /work/main/.venv/bin/python scripts/transformers_keylists.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYLISTS = ROOT / "tests" / "data" / "keylists"

# transformers' Qwen2_5OmniConfig defaults are documented as Qwen/Qwen2.5-Omni-7B's for
# the thinker, its audio and vision towers and token2wav (configuration_qwen2_5_omni.py);
# its talker defaults are not the checkpoint's, so the talker is given in full.
_SOURCES_7B = [
    "thinker text and token2wav: transformers' Qwen2_5OmniConfig defaults, documented as "
    "Qwen/Qwen2.5-Omni-7B's; the thinker text values also as quoted from the published "
    "config.json in alibaba/rtp-llm's Qwen2.5-Omni tests",
    "audio tower (d_model 1280, 32 layers, 20 heads, output 3584) and vision tower (depth 32, "
    "hidden 1280, 16 heads, out 3584, patch 14, temporal 2, window 112): a Qwen2.5-Omni-7B "
    "config.json quoted in a public port's config validation test; the vision tower's "
    "intermediate 3420 and full-attention blocks 7/15/23/31 as in Qwen2.5-VL's published "
    "configs (the same tower); transformers' default vision hidden_size (3584) is not the "
    "checkpoint's",
    "talker (hidden 896, 24 layers, 12 heads, 4 KV heads, head_dim 128, ffn 18944, "
    "embedding 3584, vocab 8448): alibaba/rtp-llm's Qwen2.5-Omni talker tests and plan, "
    "quoting the published config.json",
]
_SOURCES_3B = [
    "thinker text (hidden 2048, ffn 11008, 36 layers, 16 heads, 2 KV heads, vocab 151936): "
    "the Tyr port's Qwen2.5-Omni-3B config (Tyr/Model/Qwen25Omni/Config.lean, 'from HF "
    "config.json'); the same backbone as Qwen2.5-VL-3B's published config, whose vision "
    "tower projects to 2048",
    "talker heads (14 heads, 2 KV heads, head_dim 64): the lluda port's Qwen2.5-Omni-3B "
    "talker notes; talker hidden 896, 24 layers, ffn 4864, embedding 2048 (= the thinker's "
    "width): not found in a second public source, taken as the 0.5B Qwen2.5 backbone the "
    "7B talker also uses (hidden 896, 24 layers) with its own ffn",
    "audio and vision towers, token2wav: the 7B's (transformers' defaults), projecting "
    "into the 2048-wide thinker",
]

_MROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}


def _qwen_config(text: dict, talker: dict) -> dict:
    hidden = text["hidden_size"]
    return {
        "thinker_config": {
            "text_config": {**text, "rope_parameters": _MROPE, "tie_word_embeddings": False},
            # Whisper-large-v3's encoder (d_model 1280, 32 layers, 20 heads, ffn 5120;
            # transformers' defaults) and Qwen2.5-VL's vision tower, given in full:
            # transformers' default vision hidden_size (3584) is not the checkpoint's 1280.
            "audio_config": {"d_model": 1280, "encoder_layers": 32,
                             "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                             "num_mel_bins": 128, "output_dim": hidden},
            "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420,
                              "num_heads": 16, "out_hidden_size": hidden, "patch_size": 14,
                              "temporal_patch_size": 2, "spatial_merge_size": 2,
                              "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
        },
        "talker_config": {**talker, "vocab_size": 8448, "rope_parameters": _MROPE},
        "enable_audio_output": True,
    }


QWEN = {
    "qwen2.5-omni-7b": (
        "Qwen/Qwen2.5-Omni-7B",
        _SOURCES_7B,
        _qwen_config(
            {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
             "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
            {"hidden_size": 896, "intermediate_size": 18944, "num_hidden_layers": 24,
             "num_attention_heads": 12, "num_key_value_heads": 4, "head_dim": 128,
             "embedding_size": 3584},
        ),
    ),
    "qwen2.5-omni-3b": (
        "Qwen/Qwen2.5-Omni-3B",
        _SOURCES_3B,
        _qwen_config(
            {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
             "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936},
            {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 64,
             "embedding_size": 2048},
        ),
    ),
}

# transformers' MoshiConfig and MimiConfig defaults are documented as kmhf/hf-moshiko's and
# kyutai/mimi's; they agree with Kyutai's published LM settings (moshi.models.loaders'
# _lm_kwargs: dim 4096, 32 layers, 32 heads, gating 2*int(2*4.125*4096/3) = 22528, depth
# transformer 1024 wide, 6 layers, 16 heads). The audio vocabulary is Mimi's 2048 codes.
MOSHIKO = {"audio_vocab_size": 2048, "audio_encoder_config": {"model_type": "mimi"}}
_SOURCES_MOSHIKO = [
    "transformers' MoshiConfig and MimiConfig defaults (documented as kmhf/hf-moshiko's and "
    "kyutai/mimi's), audio_vocab_size 2048 (Mimi's codebook); cross-checked in the tests "
    "against Kyutai's own tree (moshiko.moshi.json.gz) mapped through Duetto's layout",
    "no config.json or safetensors index of kmhf/hf-moshiko was found in public "
    "repositories",
]


def _file_layout(model) -> dict[str, list[int]]:
    from transformers.core_model_loading import revert_weight_conversion

    state = revert_weight_conversion(model, model.state_dict())
    return {name: list(t.shape) for name, t in sorted(state.items())}


def _write(name: str, record: dict) -> None:
    KEYLISTS.mkdir(parents=True, exist_ok=True)
    path = KEYLISTS / f"{name}.json.gz"
    path.write_bytes(gzip.compress(json.dumps(record, indent=0).encode(), mtime=0))
    print(f"wrote {path.relative_to(ROOT)} "
          f"({sum(len(f['tensors']) for f in record['files'].values())} tensors)")


def main() -> None:
    import torch
    import transformers
    from transformers import (
        MoshiConfig,
        MoshiForConditionalGeneration,
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the talker config warns about text ids it names
    made = {"made_by": "scripts/transformers_keylists.py",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    for name, (hub_id, sources, config) in QWEN.items():
        with torch.device("meta"):
            model = Qwen2_5OmniForConditionalGeneration(Qwen2_5OmniConfig(**config))
        _write(name, {
            "checkpoint": hub_id, "layout": "transformers", "sources": sources,
            "how": "transformers' Qwen2_5OmniForConditionalGeneration built on the meta "
                   "device from `config`, names in the file layout (revert_weight_conversion)",
            **made, "config": config,
            "files": {"model-*.safetensors": {"dtype": None, "tensors": _file_layout(model)}},
        })
    with torch.device("meta"):
        moshi = MoshiForConditionalGeneration(MoshiConfig(**MOSHIKO))
    _write("hf-moshiko", {
        "checkpoint": "kmhf/hf-moshiko", "layout": "transformers", "sources": _SOURCES_MOSHIKO,
        "how": "transformers' MoshiForConditionalGeneration built on the meta device from "
               "`config`, names in the file layout (revert_weight_conversion)",
        **made, "config": MOSHIKO,
        "files": {"model-*.safetensors": {"dtype": None, "tensors": _file_layout(moshi)}},
    })


if __name__ == "__main__":
    main()
