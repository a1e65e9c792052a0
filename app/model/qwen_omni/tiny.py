"""A tiny random-weight Qwen2.5-Omni checkpoint, built offline in about a second.

Tests and the hardware self-check load it through the very same code as the real
weights, so everything here mirrors the real folder layout: config.json and
safetensors from `save_pretrained`, `spk_dict.pt` with two speakers, a tokenizer,
and `duetto.json` with the knobs only a random model needs (a minimum answer length,
because random thinkers and talkers hit their end tokens at once).

The real vocabulary has 151 k entries; here every special token is remapped into a
320-entry byte-level vocabulary, and the config's token ids follow the remap, so the
chat layout (prompt.py) reads the ids from the tokenizer, never from constants.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from app.model.building import building

# Byte-level BPE alphabet (the GPT-2 byte → printable character map), written out here
# so that the tiny tokenizer needs no vocabulary file from anywhere.


def _byte_alphabet() -> list[str]:
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars: list[str] = []
    extra = 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_pad|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
)
TINY_VOCAB = 320
TINY_CODEC_VOCAB = 64  # talker codebook: 60 codes + pad/bos/eos/mask at the top
DUETTO_META = "duetto.json"
# The tiny token2wav integrates its flow in 2 steps (one Runge-Kutta interval: 4 DiT
# passes a window) where real checkpoints take 10 (36 passes): the steps change what a
# window costs, not its blocks or look-ahead, and the tiny model is an instrument for
# the flow, so its speech must come well faster than real time on a slow CPU.
TINY_FLOW_STEPS = 2
SPEAKERS = ("Chelsie", "Ethan")
# Random BigVGAN output is far below audible level (RMS ~1e-5); the last conv is scaled
# at build time so the tiny model's "speech" sits near this RMS (noise, not words).
_TARGET_RMS = 0.1


def tiny_vocab() -> dict[str, int]:
    vocab = {ch: i for i, ch in enumerate(_byte_alphabet())}
    for offset, tok in enumerate(SPECIAL_TOKENS):
        vocab[tok] = 256 + offset
    return vocab


def _tiny_config(vocab: dict[str, int]):  # -> Qwen2_5OmniConfig
    from transformers import Qwen2_5OmniConfig

    ids = {tok: vocab[tok] for tok in SPECIAL_TOKENS}
    codec = {
        "tts_codec_pad_token_id": TINY_CODEC_VOCAB - 4,
        "tts_codec_start_token_id": TINY_CODEC_VOCAB - 3,
        "tts_codec_end_token_id": TINY_CODEC_VOCAB - 2,
        "tts_codec_mask_token_id": TINY_CODEC_VOCAB - 1,
    }
    mm_ids = {
        "audio_token_index": ids["<|AUDIO|>"],
        "image_token_index": ids["<|IMAGE|>"],
        "video_token_index": ids["<|VIDEO|>"],
        "audio_start_token_id": ids["<|audio_bos|>"],
        "audio_end_token_id": ids["<|audio_eos|>"],
    }
    # head_dim 16 -> mrope_section must sum to 8.
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
    text = {
        "vocab_size": TINY_VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 32768,
        "rope_parameters": rope,
        "tie_word_embeddings": False,
    }
    thinker = {
        "text_config": text,
        "audio_config": {
            "num_mel_bins": 128,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 32,
            "d_model": 16,
            "output_dim": 32,
            "n_window": 100,
            "max_source_positions": 1500,
        },
        "vision_config": {
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [0],
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **mm_ids,
        # get_rope_index reads these from the thinker config although the config
        # class does not declare them (the real config.json carries them too).
        "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"],
        "user_token_id": vocab["u"],
    }
    talker = {
        "vocab_size": TINY_CODEC_VOCAB,
        "embedding_size": 32,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "rope_parameters": rope,
        **mm_ids,
        "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"],
        "tts_text_start_token_id": ids["<tts_text_bos>"],
        "tts_text_end_token_id": ids["<tts_text_eod>"],
        "tts_text_pad_token_id": ids["<tts_pad>"],
        **codec,
    }
    token2wav = {
        "dit_config": {
            "hidden_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "head_dim": 16,
            "ff_mult": 2,
            "emb_dim": 16,
            "enc_emb_dim": 16,
            "enc_dim": 16,
            # The last channel count must equal the sum of the middle three.
            "enc_channels": [16, 16, 16, 16, 48],
            "enc_attention_channels": 8,
            "enc_se_channels": 8,
            "enc_res2net_scale": 2,
            "num_embeds": TINY_CODEC_VOCAB,
            "mel_dim": 80,
            "block_size": 24,
            "look_ahead_layers": [1],
            "look_backward_layers": [0, 2],
            "repeats": 2,
            "dropout": 0.0,
        },
        "bigvgan_config": {
            "mel_dim": 80,
            # 64 channels halving per stage down to 1 (the real one has 1536 down to 24):
            # the fewest the six stages allow. With the polyphase activations
            # (antialias.py) the cost follows the samples times channels at each stage,
            # so halving the channels from 128 took a third off the vocoder's time.
            "upsample_initial_channel": 64,
            # Same rates and upsampling kernels as the real vocoder: 240 samples per
            # mel frame. Each stage keeps one of the real vocoder's three parallel AMP
            # blocks, the widest (kernel 11, dilations 1, 3, 5): parallel blocks are
            # summed, so a stage's receptive field is its widest block's and the whole
            # vocoder's is the real one's, and streaming is tested on the real shape
            # (tests/test_qwen_speech.py: a shorter vocoder context leaves seams). The
            # other two blocks were two thirds of the tiny vocoder's time.
            "upsample_rates": [5, 3, 2, 2, 2, 2],
            "upsample_kernel_sizes": [11, 7, 4, 4, 4, 4],
            "resblock_kernel_sizes": [11],
            "resblock_dilation_sizes": [[1, 3, 5]],
        },
    }
    return Qwen2_5OmniConfig(
        thinker_config=thinker,
        talker_config=talker,
        token2wav_config=token2wav,
        enable_audio_output=True,
    )


def _speaker_dict(config, vocab: dict[str, int], gen: torch.Generator) -> dict[str, dict]:
    dit = config.token2wav_config.dit_config
    speakers = {}
    for i, name in enumerate(SPEAKERS):
        speakers[name] = {
            # The real checkpoint's bos tokens are text tokens that open the talker's
            # reply stream; any in-vocabulary id works for random weights.
            "bos_token": vocab["<tts_text_bos>"] if i == 0 else vocab["<|endoftext|>"],
            "cond": torch.randn(1, dit.enc_emb_dim, generator=gen),
            "ref_mel": torch.randn(1, 60, dit.mel_dim, generator=gen),
        }
    return speakers


def _make_audible(model, seed: int) -> None:
    """Scale the vocoder's last conv so random codes come out at about _TARGET_RMS with
    the flow steps the tiny model runs with."""
    t2w = model.token2wav
    dit = t2w.config.dit_config
    gen = torch.Generator().manual_seed(seed + 1)
    codes = torch.randint(0, dit.num_embeds - 4, (1, 48), generator=gen)
    with torch.no_grad():
        wave = t2w(
            codes,
            conditioning=torch.randn(1, dit.enc_emb_dim, generator=gen),
            reference_mel=torch.randn(1, 60, dit.mel_dim, generator=gen),
            num_steps=TINY_FLOW_STEPS,  # as the stream will run it
        )
        rms = float(wave.float().pow(2).mean().sqrt())
        if rms > 0:
            t2w.code2wav_bigvgan_model.conv_post.weight.mul_(_TARGET_RMS / rms)


def build_tiny(folder: Path, *, min_answer_tokens: int = 8, seed: int = 0,
               answer_codes: int = 0) -> Path:
    """Write a loadable tiny Qwen2.5-Omni checkpoint into `folder` and return it.

    Its random weights would stop an answer at once: `min_answer_tokens` sets the
    shortest answer's text, and its speech lasts as many codes (20 ms each) and a little
    more. `answer_codes`, when set, makes the speech at least that long on its own: a real
    answer speaks about 15 codes per text token (50 codes, 3.3 tokens a second), and the
    thinker runs in step with the talker until its text is done, so a tiny answer with a
    code per token costs a thinker pass for every 20 ms of speech that a real one does
    not (on a 2-core CPU a third of the answer's time).
    """
    if min_answer_tokens < 1:
        raise ValueError("min_answer_tokens must be at least 1")
    if answer_codes < 0:
        raise ValueError("answer_codes must not be negative")
    from transformers.utils import logging as hf_logging

    # The tiny talker's vocabulary is smaller than the text ids its config names (as in
    # the real checkpoint); transformers warns about each one. Not useful here.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return _build(Path(folder), min_answer_tokens, seed, answer_codes)
    finally:
        hf_logging.set_verbosity(previous)


def make_tokenizer(special_ids: dict[str, int]):
    """A byte-level Qwen2Tokenizer (one token per byte, no merges) whose special tokens
    sit at `special_ids`: the tiny model's remapped ids, or the real checkpoint's."""
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(_byte_alphabet())}
    vocab.update(special_ids)
    specials = [t for t in special_ids if t != "<|endoftext|>"]
    return Qwen2Tokenizer(vocab=vocab, merges=[], additional_special_tokens=specials)


def _build(folder: Path, min_answer_tokens: int, seed: int, answer_codes: int) -> Path:
    from transformers import Qwen2_5OmniForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    config = _tiny_config(vocab)
    with building(torch.float32):
        torch.manual_seed(seed)
        model = Qwen2_5OmniForConditionalGeneration(config)
        model.eval()
        _make_audible(model, seed)
    eos = [vocab["<|im_end|>"], vocab["<|endoftext|>"]]
    model.generation_config.eos_token_id = eos
    model.save_pretrained(folder, safe_serialization=True)

    gen = torch.Generator().manual_seed(seed)
    torch.save(_speaker_dict(config, vocab, gen), folder / "spk_dict.pt")

    make_tokenizer({t: vocab[t] for t in SPECIAL_TOKENS}).save_pretrained(folder)

    meta = {"tiny": True, "min_answer_tokens": int(min_answer_tokens), "seed": int(seed),
            "flow_steps": TINY_FLOW_STEPS}
    if answer_codes:
        meta["answer_codes"] = int(answer_codes)
    (folder / DUETTO_META).write_text(json.dumps(meta, indent=1))
    return folder
