"""A tiny random-weight MiniCPM-o checkpoint in the published layout.

Same files as openbmb/MiniCPM-o-4_5: config.json (model_type "minicpmo"), 4 safetensors
shards and `model.safetensors.index.json`, a tokenizer whose special tokens sit at the
real ids (<image> 151669 ... <|tts_pad|> 151722 and the rest up to 151747, a 151,748-row
vocabulary), plus duetto.json. Sizes are shrunk except where behaviour depends on them:
the vocabulary and token ids, SigLIP's 14-pixel patches and 70×70 position table,
Whisper's 80 mel bins and 1500 positions (the cache reset), 64 resampler queries, the
pooling of 5, and the speech decoder's code and text vocabularies.

Weights are drawn tensor by tensor, in name order, from one seeded generator: the same
seed gives byte-identical shards whatever the library versions' own initialisers do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from app.model.minicpm_o.config import MiniCPMOConfig

DUETTO_META = "duetto.json"
REPLY_UNITS = 3  # seconds of each tiny answer
SHARDS = 4
INDEX = "model.safetensors.index.json"
UNK_ID = 128244  # <unk>: an ordinary vocabulary entry in the published tokenizer
# The published tokenizer's added tokens, in id order from 151643 (added_tokens.json).
ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>", "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>",
    "<quad>", "</quad>", "<point>", "</point>", "<slice>", "</slice>", "<image_id>",
    "</image_id>", "<unit>", "</unit>", "<answer>", "</answer>", "<focus>", "</focus>",
    "<line>", "</line>", "<perception>", "</perception>", "<source_image>", "</source_image>",
    "<image_save_to>", "</image_save_to>", "<|audio_start|>", "<|audio|>", "<|audio_end|>",
    "<|spk_bos|>", "<|spk|>", "<|spk_eos|>", "<|tts_bos|>", "<|tts_eos|>", "<|listen|>",
    "<|speak|>", "<|interrupt|>", "<|vad_start|>", "<|vad_end|>", "<|emotion_start|>",
    "<|emotion_end|>", "<|speed_start|>", "<|speed_end|>", "<|pitch_start|>", "<|pitch_end|>",
    "<|turn_bos|>", "<|turn_eos|>", "<|chunk_eos|>", "<|chunk_bos|>", "<|chunk_tts_bos|>",
    "<|chunk_tts_eos|>", "<|tts_pad|>", *(f"<|timbre_{i}|>" for i in range(7, 32)),
)
FIRST_ADDED_ID = 151643
VOCAB = FIRST_ADDED_ID + len(ADDED_TOKENS)  # 151748


def special_ids() -> dict[str, int]:
    ids = {tok: FIRST_ADDED_ID + i for i, tok in enumerate(ADDED_TOKENS)}
    ids["<unk>"] = UNK_ID
    return ids


def tiny_config_dict() -> dict:
    """config.json of the tiny checkpoint, with the published file's keys."""
    ids = special_ids()
    return {
        "architectures": ["MiniCPMO"],
        "model_type": "minicpmo",
        "vocab_size": VOCAB,
        "hidden_size": 128,  # the resampler has one head per 128 of it
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "hidden_act": "silu",
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "attention_bias": False,
        "use_sliding_window": False,  # as Qwen3-8B's config: full attention in every layer
        "sliding_window": None,
        "max_window_layers": 2,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "torch_dtype": "float32",
        "query_num": 64,
        "image_size": 448,
        "drop_vision_last_layer": True,
        "batch_vision_input": True,
        "use_image_id": True,
        "vision_batch_size": 16,
        "audio_pool_step": 5,
        "audio_chunk_length": 1.0,
        "stream_input": False,
        "init_vision": True,
        "init_audio": True,
        "init_tts": True,
        "slice_config": {"max_slice_nums": 1, "patch_size": 14, "scale_resolution": 448,
                         "model_type": "minicpmv"},
        "vision_config": {"hidden_size": 32, "image_size": 980, "intermediate_size": 64,
                          "model_type": "siglip", "num_attention_heads": 2,
                          "num_hidden_layers": 3, "patch_size": 14},
        "audio_config": {"model_type": "whisper", "d_model": 32, "encoder_layers": 2,
                         "encoder_attention_heads": 2, "encoder_ffn_dim": 128,
                         "decoder_layers": 1, "decoder_attention_heads": 2,
                         "decoder_ffn_dim": 128, "num_mel_bins": 80,
                         "max_source_positions": 1500, "max_target_positions": 448,
                         "activation_function": "gelu"},
        "tts_config": {"model_type": "minicpmtts", "llm_dim": 128, "hidden_size": 32,
                       "intermediate_size": 64, "num_attention_heads": 2,
                       "num_hidden_layers": 1, "num_key_value_heads": 2,
                       "max_position_embeddings": 4096, "num_audio_tokens": 6562,
                       "num_text_tokens": 152064, "num_vq": 1, "projector_type": "mlp",
                       "backbone_model": "llama", "audio_bos_token_id": 151687,
                       "text_eos_token_id": 151692},
    }


def _is_norm_weight(name: str) -> bool:
    leaf = name.rsplit(".", 2)
    return name.endswith(".weight") and any(
        part.endswith(("norm", "layernorm", "layer_norm")) or part.startswith("ln_")
        for part in leaf[-2:-1])


def random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A weight of a plausible scale for its kind, so activations stay O(1)."""
    noise = torch.randn(shape, generator=gen, dtype=torch.float32)
    if _is_norm_weight(name):
        return 1.0 + 0.1 * noise
    if name.endswith("bias") or len(shape) == 1:
        return 0.02 * noise
    if "embed" in name or name.endswith(("query", "emb_text.weight")) or ".emb_code." in name:
        return 0.5 * noise
    if name.endswith("original0"):  # weight-norm magnitude: positive
        return 1.0 + 0.1 * noise.abs()
    fan_in = math.prod(shape[1:])
    return noise / math.sqrt(fan_in)


def make_tokenizer():
    """A byte-level Qwen2 tokenizer with the published special tokens at their ids."""
    from app.model.qwen_omni.tiny import make_tokenizer as byte_tokenizer

    tok = byte_tokenizer(special_ids())
    tok.eos_token = "<|im_end|>"
    tok.bos_token = "<|im_start|>"
    tok.pad_token = "<|endoftext|>"
    tok.unk_token = "<unk>"
    return tok


def _shard_names(names: list[str]) -> dict[str, str]:
    """Tensor -> shard file: the names in order, cut into SHARDS runs of equal count."""
    ordered = sorted(names)
    return {n: f"model-{i * SHARDS // len(ordered) + 1:05d}-of-{SHARDS:05d}.safetensors"
            for i, n in enumerate(ordered)}


def write_checkpoint(folder: Path, config: dict, state: dict[str, torch.Tensor]) -> None:
    """config.json, the shards and their index (the published layout)."""
    from safetensors.torch import save_file

    weight_map = _shard_names(list(state))
    for shard in sorted(set(weight_map.values())):
        part = {n: state[n].contiguous() for n in sorted(state) if weight_map[n] == shard}
        save_file(part, str(folder / shard), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def random_state(config: dict, seed: int) -> dict[str, torch.Tensor]:
    from app.model.minicpm_o.loader import expected_shapes, skeleton

    shapes = expected_shapes(skeleton(MiniCPMOConfig.from_dict(config)))
    gen = torch.Generator().manual_seed(seed)
    return {name: random_tensor(name, shapes[name], gen) for name in sorted(shapes)}


def build_tiny(folder: Path, *, min_answer_tokens: int = 8, seed: int = 0) -> Path:
    """Write a loadable tiny MiniCPM-o checkpoint into `folder` and return it."""
    if min_answer_tokens < 1:
        raise ValueError("min_answer_tokens must be at least 1")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config_dict()
    write_checkpoint(folder, config, random_state(config, seed))
    make_tokenizer().save_pretrained(folder)
    write_tiny_speech(folder, seed)
    # A random model's own decisions are noise: the tiny one answers each of the user's
    # turns with REPLY_UNITS units (schedule.py's ReplySchedule, a test instrument).
    meta = {"tiny": True, "seed": int(seed), "min_answer_tokens": int(min_answer_tokens),
            "reply_units": REPLY_UNITS}
    (folder / DUETTO_META).write_text(json.dumps(meta, indent=1))
    return folder


DEMO_VOICE = Path("assets") / "demo.wav"  # where the official code looks for its voice
DEMO_VOICE_SECONDS = 4.0


def write_tiny_speech(folder: Path, seed: int = 0) -> None:
    """The speech path's files as the checkpoint ships them: assets/token2wav (flow,
    vocoder, the two voice encoders), tiny and random, and a demo voice recording."""
    import soundfile

    from app.model.minicpm_o.speech import ASSETS
    from app.model.minicpm_o.token2wav.tiny_flow import write_tiny_flow
    from app.model.minicpm_o.token2wav.tiny_hift import write_tiny_hift
    from app.model.minicpm_o.token2wav.tiny_voice import write_tiny_voice_encoders

    assets = Path(folder) / ASSETS
    write_tiny_flow(assets, seed)
    write_tiny_hift(assets, seed)
    write_tiny_voice_encoders(assets, seed)
    soundfile.write(str(Path(folder) / DEMO_VOICE), speech_like(16000, DEMO_VOICE_SECONDS),
                    16000, subtype="PCM_16")


def speech_like(rate: int, seconds: float) -> np.ndarray:
    """Speech-like audio at `rate` (gliding harmonics, syllable-rate loudness, a pause),
    rounded to 16-bit steps so that a PCM_16 file holds exactly these samples: a voice
    for tiny models, which cannot tell it from a person's."""
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    pitch = 180.0 * (1.0 + 0.2 * np.sin(2 * np.pi * 0.6 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4, 6))
    envelope = 0.4 + 0.6 * np.sin(2 * np.pi * 3.5 * t) ** 2
    envelope = np.where((t % 3.0) > 2.6, 0.02, envelope)
    wave = 0.25 * voice * envelope
    return np.round(wave * 32767).astype(np.int16).astype(np.float32) / 32768
