"""A live audio stream into MiniCPM-o: 1 s of 16 kHz samples in, 10 LLM embeddings out.

As the official duplex code: the first unit takes 1035 ms (zeros in front if less was
heard; 1030 ms once aligned to frames), later units 1000 ms; each unit's mel carries
2 frames of context on each side (none before the first) for the encoder's
convolutions; the encoder streams with its KV cache (whisper_stream.py); the projector
maps 50 frames/s to the LLM's width and an average pool of 5 makes 10 embeddings/s.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.model.minicpm_o.mel import SAMPLE_RATE, LogMel, StreamingMel, clip_logmel
from app.model.minicpm_o.whisper_stream import WhisperCache, encode_clip, encode_unit

FIRST_CHUNK_MS = 1035  # the official first unit's length
CONTEXT_MS = 20  # mel frames of CNN context on each side (2 frames)


def pooled_length(mel_frames: int, pool: int) -> int:
    """Embeddings a unit of `mel_frames` frames (context included) yields."""
    conv = (mel_frames - 1) // 2 + 1
    return (conv - pool) // pool + 1


def _project_and_pool(model: nn.Module, hidden: torch.Tensor, mel_frames: int) -> torch.Tensor:
    """Encoder frames [1, n, d] -> [embeddings, llm_hidden] (projector, average pool)."""
    embeds = model.audio_projection_layer(hidden)
    pooled = model.audio_avg_pooler(embeds.transpose(1, 2)).transpose(1, 2)
    return pooled[0, :pooled_length(mel_frames, model.config.audio_pool_step)]


@torch.no_grad()
def embed_clip(model: nn.Module, pcm16k: np.ndarray) -> torch.Tensor:
    """A whole clip (the system prompt's reference voice) -> [n, llm_hidden], as the
    official offline path: 30 s pieces, 1 s attention blocks, 10 embeddings a second."""
    logmel = LogMel(int(model.config.audio.num_mel_bins))
    chunk_frames = int(float(model.config.audio_chunk_length) * 50)  # 50 encoder frames/s
    out = []
    for mel in clip_logmel(logmel, pcm16k):
        hidden = encode_clip(model.apm, mel.unsqueeze(0), chunk_frames)
        out.append(_project_and_pool(model, hidden, mel.shape[-1]))
    return torch.cat(out)


class AudioStream:
    """One conversation's audio state: samples not yet used, the mel front end, the
    encoder's KV cache. `reset()` starts a new conversation."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        cfg = model.config
        self.chunk_ms = round(1000 * float(cfg.audio_chunk_length))
        self.mel = StreamingMel(int(cfg.audio.num_mel_bins), chunk_ms=self.chunk_ms,
                                first_chunk_ms=FIRST_CHUNK_MS, context_ms=CONTEXT_MS)
        self.cache = WhisperCache()
        self.reset()

    def reset(self) -> None:
        self.samples = np.zeros(0, dtype=np.float32)
        self.units = 0
        self.last_mel: torch.Tensor | None = None  # the last unit's [n_mels, frames]
        self.mel.reset()
        self.cache.clear()

    def _empty(self) -> torch.Tensor:
        model = self.model
        device = model.audio_projection_layer.linear2.bias.device  # biases stay float
        dtype = model.llm.get_input_embeddings().weight.dtype
        return torch.zeros(0, model.config.llm_hidden, dtype=dtype, device=device)

    @torch.no_grad()
    def feed(self, pcm16k: np.ndarray) -> torch.Tensor:
        """Samples (float32, 16 kHz mono, normally 1 s) -> [10, llm_hidden] embeddings,
        or [0, llm_hidden] if too little audio has arrived for the next unit.

        One unit per call, as the official loop: samples beyond it wait for the next
        call (feed 1 s each time and nothing accumulates)."""
        pcm = np.asarray(pcm16k, dtype=np.float32).reshape(-1)
        self.samples = np.concatenate([self.samples, pcm])
        if self.units == 0:
            needed = int(FIRST_CHUNK_MS * SAMPLE_RATE / 1000)
            if len(self.samples) < needed:
                pad = np.zeros(needed - len(self.samples), dtype=np.float32)
                self.samples = np.concatenate([pad, self.samples])
        want = self.mel.chunk_size()
        if len(self.samples) < want:
            return self._empty()
        first = self.units == 0
        mel = self.mel.process(self.samples[:want])
        self.samples = self.samples[want:]
        if mel.shape[-1] == 0:
            return self._empty()
        self.units += 1
        self.last_mel = mel
        context = self.mel.context_frames
        model = self.model
        hidden = encode_unit(model.apm, mel.unsqueeze(0), self.cache,
                             prefix=0 if first else context, suffix=context)
        return _project_and_pool(model, hidden, mel.shape[-1])
