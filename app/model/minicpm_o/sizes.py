"""The published MiniCPM-o 4.5 architecture as data, for the memory plan (no download).

config.json values of openbmb/MiniCPM-o-4_5 that shape the module tree: the LLM is
Qwen3-8B's (36 layers, width 4096, 32 query / 8 key-value heads of 128, MLP 12288,
vocabulary 151748, untied head); the vision tower SigLIP-so400m/14 (27 layers of which
the last is dropped, 1152 wide, MLP 4304, 16 heads, a 70×70 position table); the audio
encoder Whisper-medium's (24 layers, width 1024, MLP 4096, 1500 positions); the speech
decoder a 20-layer Llama (width 768, MLP 3072, 12 heads) over 6562 codes and a 152064-row
text table. They are the sizes of the official module tree that llama.cpp-omni prints
from the published checkpoint (tools/omni/convert/model.txt), and the tree built from
them holds the 1,398 tensors of tests/data/keylists/minicpm-o-4.5.json.gz.

The speech vocoder (token2wav, part 2 of the port) is not in that tree: it is a set of
files beside the checkpoint (assets/token2wav). Their sizes, as the model's file listing
gives them (not checked here: no hub access), are what the plan counts for it.
"""

from __future__ import annotations

# The files of assets/token2wav: bytes, and whether the plan puts them on the GPU.
# flow.pt (conformer encoder + flow-matching DiT) and hift.pt (the HiFT vocoder) run per
# chunk of speech; the ONNX speaker encoder (CAM++) and speech tokenizer only encode the
# reference voice once per conversation, on the CPU (system RAM).
TOKEN2WAV_FILES: dict[str, tuple[int, bool]] = {
    "flow.pt": (595_000_000, True),
    "hift.pt": (80_000_000, True),
    "campplus.onnx": (27_000_000, False),
    "speech_tokenizer_v2_25hz.onnx": (474_000_000, False),
}


def full_size_config() -> dict:
    """config.json of the published checkpoint, as far as the module tree depends on it."""
    return {
        "architectures": ["MiniCPMO"],
        "model_type": "minicpmo",
        "vocab_size": 151748,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "query_num": 64,
        "image_size": 448,
        "drop_vision_last_layer": True,
        "audio_pool_step": 5,
        "audio_chunk_length": 1.0,
        "slice_config": {"max_slice_nums": 1, "patch_size": 14, "scale_resolution": 448},
        "vision_config": {"hidden_size": 1152, "image_size": 980, "intermediate_size": 4304,
                          "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14},
        "audio_config": {"d_model": 1024, "encoder_layers": 24, "encoder_attention_heads": 16,
                         "encoder_ffn_dim": 4096, "decoder_layers": 24,
                         "decoder_attention_heads": 16, "decoder_ffn_dim": 4096,
                         "num_mel_bins": 80, "max_source_positions": 1500},
        "tts_config": {"llm_dim": 4096, "hidden_size": 768, "intermediate_size": 3072,
                       "num_attention_heads": 12, "num_key_value_heads": 12,
                       "num_hidden_layers": 20, "max_position_embeddings": 4096,
                       "num_audio_tokens": 6562, "num_text_tokens": 152064, "num_vq": 1,
                       "projector_type": "mlp", "backbone_model": "llama",
                       "audio_bos_token_id": 151687, "text_eos_token_id": 151692},
    }


def config():  # -> MiniCPMOConfig
    from app.model.minicpm_o.config import MiniCPMOConfig

    return MiniCPMOConfig.from_dict(full_size_config(), where="the published config")
