"""The published architectures of the registry's checkpoints, as data.

The app has no model-hub access when it plans memory for a checkpoint it has not
downloaded, so the configs are kept here, with where each value came from:

* Qwen2.5-Omni 3B and 7B: app/model/qwen_omni/sizes.py (the published config.json
  values; its docstring says which were read where).
* Moshi (moshiko, both layouts) and PersonaPlex-7B: Kyutai's LM settings for moshiko,
  as `moshi.models.loaders` writes them (`_lm_kwargs`: dim 4096, 32 layers of 32 heads,
  hidden_scale 4.125 with SiLU gating, i.e. a fused 2 × 11264 = 22528-wide gate, text
  vocabulary 32000 + 1, 2048 audio codes, context 3000 frames, a 1024-wide depth
  transformer of 6 layers × 16 heads with 4.125 × 1024 gating, padding id 3), which are
  also transformers' MoshiConfig defaults (transformers documents them as kmhf/hf-moshiko's).
  Mimi: transformers' MimiConfig defaults, which are kyutai/mimi's published config.
  PersonaPlex-7B is a fine-tune of the same model; its depth transformer holds 16 steps
  in the file, of which the loader keeps the 8 that speak (moshi/layout.py), so what is
  in memory is the moshiko architecture.
* MiniCPM-o 4.5: app/model/minicpm_o/sizes.py (the published config.json values and its
  speech vocoder's files).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.model.contract import BackendError

MOSHI_LM = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "head_dim": 128,
    "ffn_dim": 22528,
    "max_position_embeddings": 3000,
    "sliding_window": 3000,
    "audio_vocab_size": 2048,
    "num_codebooks": 8,
    "pad_token_id": 3,
}
MOSHI_DEPTH = {
    "hidden_size": 1024,
    "num_hidden_layers": 6,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "ffn_dim": 5632,
    "max_position_embeddings": 9,
    "sliding_window": 8,
}


def moshi_config():  # -> MoshiConfig
    from transformers import MimiConfig, MoshiConfig

    return MoshiConfig(**MOSHI_LM, audio_encoder_config=MimiConfig().to_dict(),
                       depth_decoder_config=dict(MOSHI_DEPTH))


@dataclass(frozen=True)
class Published:
    family: str
    layout: str  # "transformers" or "moshi": which loading path builds it
    size: str  # for Qwen: "3B" / "7B"


_ENTRIES: dict[str, Published] = {
    "qwen2.5-omni-3b": Published("qwen2.5-omni", "transformers", "3B"),
    "qwen2.5-omni-7b": Published("qwen2.5-omni", "transformers", "7B"),
    "moshiko-hf": Published("moshi", "transformers", "7B"),
    "moshiko": Published("moshi", "moshi", "7B"),
    "personaplex-7b": Published("moshi", "moshi", "7B"),
    "minicpm-o-4.5": Published("minicpm-o", "transformers", "9B"),
}


def known(entry_id: str) -> bool:
    return entry_id in _ENTRIES


def published(entry_id: str) -> Published:
    try:
        return _ENTRIES[entry_id]
    except KeyError:
        raise BackendError(
            f"no published architecture is kept for {entry_id!r}",
            hint="plan a downloaded folder instead (`duetto models plan DIR`), or pick one of "
                 + ", ".join(_ENTRIES)) from None


def config_for(entry_id: str):  # -> a transformers PretrainedConfig (MiniCPM-o: its own)
    entry = published(entry_id)
    if entry.family == "qwen2.5-omni":
        from app.model.qwen_omni.sizes import full_size_config

        return full_size_config(entry.size)
    if entry.family == "minicpm-o":
        from app.model.minicpm_o import sizes

        return sizes.config()
    return moshi_config()


def vocoder_files(entry_id: str) -> dict[str, tuple[int, bool]] | None:
    """Files of a speech vocoder kept beside the checkpoint (MiniCPM-o's token2wav):
    name -> (bytes, runs on the device); None for families whose vocoder is in the tree."""
    if published(entry_id).family == "minicpm-o":
        from app.model.minicpm_o.sizes import TOKEN2WAV_FILES

        return dict(TOKEN2WAV_FILES)
    return None
