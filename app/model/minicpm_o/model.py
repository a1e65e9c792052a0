"""The MiniCPM-o module tree, its children named exactly as the checkpoint's tensors.

llm: transformers' Qwen3ForCausalLM. vpm + resampler: what a camera frame becomes (64
embeddings). apm + audio_projection_layer + audio_avg_pooler: what each second of audio
becomes (10 embeddings). tts: the speech decoder (weights only in part 1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.model.minicpm_o.audio import AudioStream, embed_clip
from app.model.minicpm_o.config import MiniCPMOConfig
from app.model.minicpm_o.image import frame_patches
from app.model.minicpm_o.projector import MLPProjector
from app.model.minicpm_o.resampler import Resampler
from app.model.minicpm_o.tts import SpeechDecoder
from app.model.minicpm_o.vision import VisionTower

# The official resampler has one attention head per 128 of the LLM's width.
RESAMPLER_HEAD_DIM = 128


class MiniCPMO(nn.Module):
    def __init__(self, config: MiniCPMOConfig) -> None:
        from transformers import Qwen3ForCausalLM
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        super().__init__()
        self.config = config
        width = config.llm_hidden
        self.llm = Qwen3ForCausalLM(config.text)
        if config.init_vision:
            self.vpm = VisionTower(config.vision, config.vision_layers)
            self.resampler = Resampler(config.query_num, width, width // RESAMPLER_HEAD_DIM,
                                       int(config.vision.hidden_size))
        if config.init_audio:
            audio = config.audio
            audio._attn_implementation = "sdpa"
            self.apm = WhisperEncoder(audio)
            self.audio_avg_pooler = nn.AvgPool1d(config.audio_pool_step,
                                                 stride=config.audio_pool_step)
            self.audio_projection_layer = MLPProjector(int(audio.d_model), width)
        if config.init_tts:
            self.tts = SpeechDecoder(config.tts)

    @torch.no_grad()
    def embed_frame(self, rgb: np.ndarray) -> torch.Tensor:
        """A camera frame (H, W, 3) uint8 -> [query_num, llm_hidden] embeddings."""
        patches = frame_patches(rgb, scale_resolution=self.config.slice.scale_resolution,
                                patch=self.vpm.patch_size)
        hidden = self.vpm(patches.pixels, patches.grid)
        embeds = self.resampler(hidden, patches.grid)[0]
        table = self.llm.get_input_embeddings().weight
        return embeds.to(dtype=table.dtype)

    def new_audio_stream(self) -> AudioStream:
        return AudioStream(self)

    def embed_reference_audio(self, pcm16k: np.ndarray) -> torch.Tensor:
        """A whole clip at 16 kHz (the persona's reference voice in the system prompt)
        -> [10 per second, llm_hidden], the official offline path."""
        return embed_clip(self, pcm16k)
