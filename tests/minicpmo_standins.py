"""STAND-INS for MiniCPM-o's encoders, for tests of the unit protocol only.

The protocol and the decoder (app/model/minicpm_o/protocol.py, duplex.py) need an LLM,
a tokenizer with MiniCPM-o's special ids, and something that turns a frame into 64
embeddings and a second of audio into 10. These tests use a tiny transformers
Qwen3ForCausalLM (the real LLM class, random weights) and a byte-level tokenizer with
the real special ids; the "encoders" here are fixed random projections of simple
statistics of the input, NOT the model's vision or audio towers (those are tested
against the official code in tests/test_minicpmo_conformance.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from app.model.minicpm_o.protocol import TOKENS
from app.model.qwen_omni.tiny import make_tokenizer

VOCAB = 151748  # MiniCPM-o 4.5's LLM vocabulary
HIDDEN = 32
# The published ids of the tokens the protocol uses (tokenizer_config.json).
REAL_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<image>": 151669, "</image>": 151670, "<slice>": 151679, "</slice>": 151680,
    "<unit>": 151683, "</unit>": 151684, "<|audio_start|>": 151697,
    "<|audio_end|>": 151699, "<|tts_bos|>": 151703, "<|tts_eos|>": 151704,
    "<|listen|>": 151705, "<|speak|>": 151706, "<|turn_eos|>": 151717,
    "<|chunk_eos|>": 151718, "<|chunk_tts_eos|>": 151721, "<|tts_pad|>": 151722,
}
assert set(TOKENS.values()) <= set(REAL_IDS)


def standin_tokenizer():
    return make_tokenizer(dict(REAL_IDS))


def tiny_llm(seed: int = 0, layers: int = 2):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, max_position_embeddings=8192,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config).eval()


class StandInAudioStream:
    """10 embeddings a second from the RMS of each 100 ms: NOT the Whisper encoder."""

    def __init__(self, proj: torch.Tensor) -> None:
        self.proj = proj
        self.fed = 0

    def feed(self, pcm: np.ndarray) -> torch.Tensor:
        self.fed += 1
        blocks = np.asarray(pcm, np.float32).reshape(10, -1)
        rms = torch.from_numpy(np.sqrt((blocks ** 2).mean(axis=1))).unsqueeze(1)
        return rms * self.proj[:10]

    def reset(self) -> None:
        self.fed = 0


class StandInModel(torch.nn.Module):
    """`llm` plus stand-in encoders with the port's method names (mcpo interface)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.llm = tiny_llm(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        self.frame_proj = torch.randn(64, HIDDEN, generator=gen)
        self.audio_proj = torch.randn(10, HIDDEN, generator=gen)
        self.frames_embedded = 0

    def embed_frame(self, rgb: np.ndarray) -> torch.Tensor:
        self.frames_embedded += 1
        mean = float(np.asarray(rgb, np.float32).mean()) / 255.0
        return mean * self.frame_proj

    def new_audio_stream(self) -> StandInAudioStream:
        return StandInAudioStream(self.audio_proj)


@dataclass
class StandInLoaded:
    model: StandInModel
    tokenizer: Any
    config: Any = None


def standin_loaded(seed: int = 0) -> StandInLoaded:
    return StandInLoaded(StandInModel(seed), standin_tokenizer())
