"""A tiny random-weight Moshi checkpoint, built offline in well under a second.

Two layouts of the same weights:

* `build_tiny`: transformers' format (config.json + model.safetensors from
  `save_pretrained`, tokenizer.json, duetto.json), what `duetto models tiny moshi DIR`
  writes;
* `build_tiny_moshi_format`: the `moshi` package's format, as Kyutai and NVIDIA ship
  their checkpoints (LM in model.safetensors, Mimi in tokenizer-*.safetensors, a
  SentencePiece tokenizer_spm_32k_3.model, Kyutai's LM settings in config.json), with a
  PersonaPlex-style 16-step depth transformer. The loader must map it at load time and
  give the very same outputs as the transformers-format folder.

The shapes keep what matters for streaming: 24 kHz audio, Mimi's real strides
(8·6·5·4, then ×2 to 12.5 Hz, 1920 samples a frame), 8 codebooks per stream, the
depth transformer's per-codebook weights. Everything else is shrunk.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from app.model.building import building
from app.model.moshi import layout
from app.model.moshi.text import TEXT_EPAD_ID, TEXT_PAD_ID, WORD_BOUNDARY

DUETTO_META = "duetto.json"
TINY_TEXT_VOCAB = 128
TINY_CARD = 64  # Mimi codebook size = the LM's audio vocabulary
HEADS = 4  # head_dim 16
DEPTH_HEADS = 2
MIMI_HEADS = 2
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"  # the published Mimi's name
SPM_FILE = "tokenizer_spm_32k_3.model"
STANDARD_DELAYS = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)
# Random Mimi decoders are far below audible level; the last conv is scaled at build time
# so the tiny model's "speech" sits near this RMS (noise, not words).
_TARGET_RMS = 0.1


def tiny_mimi_config() -> dict:
    return {
        "model_type": "mimi",
        "hidden_size": 32,
        "num_filters": 4,
        "upsampling_ratios": [8, 6, 5, 4],
        "codebook_size": TINY_CARD,
        "codebook_dim": 16,
        "num_quantizers": 8,
        "vector_quantization_hidden_dimension": 16,
        "upsample_groups": 32,
        "num_hidden_layers": 1,
        "intermediate_size": 64,
        "num_attention_heads": MIMI_HEADS,
        "num_key_value_heads": MIMI_HEADS,
        "sliding_window": 250,
    }


def tiny_config():  # -> MoshiConfig
    from transformers import MoshiConfig

    return MoshiConfig(
        vocab_size=TINY_TEXT_VOCAB,
        # 64 wide with a 192-wide gate: every main Linear fits bitsandbytes' 4-bit CPU
        # kernel (in % 64, out % 32), so nf4 really quantizes the tiny model.
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        ffn_dim=2 * 192,
        max_position_embeddings=3000,
        sliding_window=3000,
        num_codebooks=8,
        pad_token_id=TEXT_PAD_ID,
        audio_encoder_config=tiny_mimi_config(),
        depth_decoder_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": DEPTH_HEADS,
            "ffn_dim": 2 * 88,  # Kyutai's gating: 2 × (2 · 4.125 · dim / 3)
            "max_position_embeddings": 9,
            "sliding_window": 8,
        },
    )


def tiny_pieces() -> list[str]:
    """The tiny SentencePiece vocabulary: Kyutai's special ids at their places
    (0 unk/EPAD, 1 <s>, 2 </s>, 3 <pad>/PAD), then single characters and ▁-words."""
    pieces = ["<unk>", "<s>", "</s>", "<pad>", WORD_BOUNDARY]
    pieces += [chr(c) for c in range(33, 127)]
    pieces += [WORD_BOUNDARY + ch for ch in "abcdefghijklmnopqrstuvwxyzIAY"]
    assert pieces[TEXT_PAD_ID] == "<pad>" and pieces[TEXT_EPAD_ID] == "<unk>"
    return pieces[:TINY_TEXT_VOCAB]


def spm_model_bytes(pieces: list[str]) -> bytes:
    """A SentencePiece Unigram model file holding `pieces` (written with protobuf)."""
    from transformers.convert_slow_tokenizer import import_protobuf

    pb = import_protobuf()
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = 1  # UNIGRAM
    proto.trainer_spec.unk_id = 0
    proto.trainer_spec.bos_id = 1
    proto.trainer_spec.eos_id = 2
    proto.trainer_spec.pad_id = 3
    proto.trainer_spec.unk_piece = "<unk>"
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    proto.normalizer_spec.escape_whitespaces = True
    for i, text in enumerate(pieces):
        piece = proto.pieces.add()
        piece.piece = text
        piece.score = -float(i) if i > 3 else 0.0
        piece.type = 2 if i == 0 else (3 if i < 4 else 1)  # UNKNOWN, CONTROL, NORMAL
    return proto.SerializeToString()


def _tiny_model(seed: int):  # -> MoshiForConditionalGeneration
    from transformers import MoshiForConditionalGeneration

    torch.manual_seed(seed)
    with building(torch.float32):
        model = MoshiForConditionalGeneration(tiny_config()).eval()
    _make_audible(model, seed)
    return model


def _make_audible(model, seed: int) -> None:
    """Scale Mimi's last decoder conv so random codes decode at about _TARGET_RMS."""
    mimi = model.audio_encoder
    gen = torch.Generator().manual_seed(seed + 1)
    codes = torch.randint(0, TINY_CARD, (1, 8, 12), generator=gen)
    last = mimi.decoder.decoder_seanet.layers[-1].conv
    with torch.no_grad():
        wave = mimi.decode(codes).audio_values
        rms = float(wave.pow(2).mean().sqrt())
        if rms > 0:
            last.weight.mul_(_TARGET_RMS / rms)
            last.bias.mul_(_TARGET_RMS / rms)


VOICE_NAME = "tiny_voice"


def _write_voice(folder: Path, seed: int) -> None:
    """A 1 s voice in voices/ (a buzzy 140 Hz tone with a syllable rhythm), so the tiny
    checkpoint has a voice set like PersonaPlex's."""
    import numpy as np
    import soundfile

    rate = 24000
    t = np.arange(rate) / rate
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * 140 * h * t) / h for h in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    wave = 0.2 * tone * envelope + 0.01 * rng.standard_normal(rate)
    (folder / "voices").mkdir(exist_ok=True)
    soundfile.write(str(folder / "voices" / f"{VOICE_NAME}.wav"), wave.astype(np.float32), rate)


def _write_meta(folder: Path, min_answer_tokens: int, seed: int, delays: tuple[int, ...]) -> None:
    meta = {
        "tiny": True,
        # Moshi has no end-of-answer token (it speaks or pads frame by frame), so a
        # minimum answer length has nothing to act on; it is recorded so every family's
        # builder takes the same options.
        "min_answer_tokens": int(min_answer_tokens),
        "seed": int(seed),
        "delays": list(delays),
    }
    (folder / DUETTO_META).write_text(json.dumps(meta, indent=1))


def build_tiny(folder: Path, *, min_answer_tokens: int = 8, seed: int = 0,
               delays: tuple[int, ...] = STANDARD_DELAYS) -> Path:
    """Write a loadable tiny Moshi checkpoint in transformers' format into `folder`.

    `delays` (text, 8 model codebooks, 8 user codebooks) go to duetto.json; a real
    transformers-format checkpoint has none there and gets Moshi's standard ones.
    """
    if min_answer_tokens < 1:
        raise ValueError("min_answer_tokens must be at least 1")
    if len(delays) != 17:
        raise ValueError("delays needs 17 entries: text, 8 model and 8 user codebooks")
    from tokenizers import Tokenizer

    from app.model.moshi.text import spm_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = _tiny_model(seed)
    model.save_pretrained(folder, safe_serialization=True)
    spm = folder / ".tiny_spm.model"
    spm.write_bytes(spm_model_bytes(tiny_pieces()))
    tok: Tokenizer = spm_tokenizer(spm)
    spm.unlink()
    tok.save(str(folder / "tokenizer.json"))
    _write_voice(folder, seed)
    _write_meta(folder, min_answer_tokens, seed, delays)
    return folder


def build_tiny_moshi_format(folder: Path, *, seed: int = 0, dep_q: int = 16,
                            delays: tuple[int, ...] = STANDARD_DELAYS) -> Path:
    """The same weights as `build_tiny(seed=seed)`, written in the moshi package's layout.

    `dep_q=16` writes a PersonaPlex-style depth transformer (steps 8..15 for the user's
    codebooks, copies of 0..7 as PersonaPlex's loader makes them when missing).
    """
    from safetensors.torch import save_file
    from transformers.models.mimi.modeling_mimi import MimiConvTranspose1d

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = _tiny_model(seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lm_state = {k: v for k, v in state.items() if not k.startswith("audio_encoder.")}
    mimi_state = {k[len("audio_encoder."):]: v for k, v in state.items()
                  if k.startswith("audio_encoder.")}
    seanet = model.audio_encoder.decoder.decoder_seanet.layers
    convtr = frozenset(i for i, m in enumerate(seanet) if isinstance(m, MimiConvTranspose1d))
    lm_moshi = layout.lm_to_moshi(lm_state, heads=HEADS, dep_q=dep_q)
    save_file(lm_moshi, str(folder / "model.safetensors"))
    save_file(layout.mimi_to_moshi(mimi_state, heads=MIMI_HEADS, convtr_layers=convtr),
              str(folder / MIMI_FILE))
    (folder / SPM_FILE).write_bytes(spm_model_bytes(tiny_pieces()))
    _write_voice(folder, seed)
    config = model.config
    lm_kwargs = {
        # Kyutai's LM settings (moshi.models.loaders' _lm_kwargs names)
        "dim": config.hidden_size,
        "text_card": config.vocab_size,
        "existing_text_padding_id": TEXT_PAD_ID,
        "n_q": 16,
        "dep_q": dep_q,
        "card": TINY_CARD,
        "num_heads": HEADS,
        "num_layers": config.num_hidden_layers,
        "context": config.max_position_embeddings,
        "max_period": 10000,
        "depformer_dim": config.depth_decoder_config.hidden_size,
        "depformer_num_heads": DEPTH_HEADS,
        "depformer_num_layers": config.depth_decoder_config.num_hidden_layers,
        "delays": list(delays),
        # Not Kyutai's: the published checkpoints use the released Mimi; a tiny one
        # says its own shape here (transformers' MimiConfig fields).
        "mimi_config": tiny_mimi_config(),
        "mimi_name": MIMI_FILE,
        "tokenizer_name": SPM_FILE,
    }
    (folder / "config.json").write_text(json.dumps(lm_kwargs, indent=1))
    return folder


def tensor_sums(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per tensor, [sum, sum of squares] in float64: what golden outputs recorded on a tiny
    checkpoint name it by (a hash would break on the last bit a CPU rounds differently)."""
    out = {}
    for name, t in sorted(state.items()):
        x = t.detach().double()
        out[name] = [float(x.sum()), float(x.pow(2).sum())]
    return out
