"""The real Qwen2.5-Omni 3B and 7B architectures: their configs as data, for the memory
plan and for benchmarks with random weights (loader.load_random).

`duetto bench gpu` and `duetto bench backend --full-size 7B` measure the real shapes
without downloading 22 GB: the numbers depend on the shapes, not on the weights (except
answer length, which the benchmarks fix).

Values are those of the published config.json files (Qwen/Qwen2.5-Omni-7B and -3B on
the Hugging Face hub), as quoted by other projects' loaders and tests (rtp-llm's
Qwen2.5-Omni tests, the Tyr port's 3B thinker config); transformers' own config
defaults are the 7B thinker's. Special token ids are the real tokenizer's.
"""

from __future__ import annotations

import torch

REAL_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|AUDIO|>": 151646,
    "<|audio_bos|>": 151647,
    "<|audio_eos|>": 151648,
    "<|vision_bos|>": 151652,
    "<|vision_eos|>": 151653,
    "<|vision_pad|>": 151654,
    "<|IMAGE|>": 151655,
    "<|VIDEO|>": 151656,
    "<tts_pad>": 151859,
    "<tts_text_bos>": 151860,
    "<tts_text_eod>": 151861,
}

_SIZES: dict[str, dict] = {
    "7B": {
        "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                 "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
        "talker": {"hidden_size": 896, "intermediate_size": 18944, "num_hidden_layers": 24,
                   "num_attention_heads": 12, "num_key_value_heads": 4, "head_dim": 128,
                   "embedding_size": 3584},
    },
    "3B": {
        "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                 "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936},
        "talker": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                   "num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 64,
                   "embedding_size": 2048},
    },
}
SIZES = tuple(_SIZES)


def full_size_config(size: str):
    from transformers import Qwen2_5OmniConfig

    if size not in _SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    spec = _SIZES[size]
    hidden = spec["text"]["hidden_size"]
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
    ids = REAL_SPECIAL_IDS
    mm = {
        "audio_token_index": ids["<|AUDIO|>"],
        "image_token_index": ids["<|IMAGE|>"],
        "video_token_index": ids["<|VIDEO|>"],
        "audio_start_token_id": ids["<|audio_bos|>"],
        "audio_end_token_id": ids["<|audio_eos|>"],
    }
    thinker = {
        "text_config": {**spec["text"], "rope_parameters": rope, "tie_word_embeddings": False},
        # Whisper-large-v3 shaped audio tower and the Qwen2.5-VL vision tower (config
        # defaults), projecting into the thinker's width.
        "audio_config": {"output_dim": hidden},
        "vision_config": {"out_hidden_size": hidden, "hidden_size": 1280,
                          "intermediate_size": 3420, "depth": 32, "num_heads": 16},
        **mm,
        "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"],
    }
    talker = {
        **spec["talker"],
        "vocab_size": 8448,
        "rope_parameters": rope,
        **mm,
        "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"],
    }
    from transformers.utils import logging as hf_logging

    # The talker's config names the thinker's token ids, which lie outside the talker's own
    # vocabulary, as in the published config; transformers warns about each one.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker,
                                 enable_audio_output=True)
    finally:
        hf_logging.set_verbosity(previous)


def random_speakers(config) -> dict[str, dict]:
    """Speaker conditioning of the right shapes for a model with random weights."""
    from app.model.qwen_omni.tiny import SPEAKERS

    dit = config.token2wav_config.dit_config
    gen = torch.Generator().manual_seed(0)
    return {name: {"bos_token": REAL_SPECIAL_IDS["<tts_text_bos>"] + i,
                   "cond": torch.randn(1, dit.enc_emb_dim, generator=gen),
                   "ref_mel": torch.randn(1, 300, dit.mel_dim, generator=gen)}
            for i, name in enumerate(SPEAKERS)}
