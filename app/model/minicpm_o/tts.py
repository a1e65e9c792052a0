"""The speech decoder's module tree (`tts`), named as the checkpoint names it.

Part 1 only holds its weights, so that the strict loader accepts the published
checkpoint; part 2 (speech) gives it its forward. The official decoder is a Llama
backbone whose input is emb_text(token) plus a projection of the LLM's hidden state,
with one code embedding and one weight-normalised code head per codebook.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from app.model.minicpm_o.config import TTSConfig
from app.model.minicpm_o.projector import MLPProjector


def _projector(config: TTSConfig) -> nn.Module:
    if config.projector_type == "mlp":
        return MLPProjector(config.llm_dim, config.hidden_size)
    if config.projector_type == "default":
        return nn.Linear(config.llm_dim, config.hidden_size, bias=False)
    raise ValueError(f"unsupported tts projector_type {config.projector_type!r}")


class SpeechDecoder(nn.Module):
    def __init__(self, config: TTSConfig) -> None:
        from transformers import LlamaConfig, LlamaModel

        super().__init__()
        if config.backbone_model != "llama":
            raise ValueError(f"unsupported tts backbone {config.backbone_model!r}")
        self.config = config
        # The official tree builds LlamaConfig from these keys only, so the backbone's
        # own token table has LlamaConfig's default vocabulary (unused: inputs are
        # embeddings).
        backbone = LlamaConfig(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_attention_heads=config.num_attention_heads,
            num_hidden_layers=config.num_hidden_layers,
            num_key_value_heads=config.num_key_value_heads,
            max_position_embeddings=config.max_position_embeddings,
        )
        self.emb_text = nn.Embedding(config.num_text_tokens, config.hidden_size)
        self.model = LlamaModel(backbone)
        self.projector_spk = _projector(config)
        self.projector_semantic = _projector(config)
        self.emb_code = nn.ModuleList(
            nn.Embedding(config.num_audio_tokens, config.hidden_size)
            for _ in range(config.num_vq))
        self.head_code = nn.ModuleList(
            weight_norm(nn.Linear(config.hidden_size, config.num_audio_tokens, bias=False),
                        name="weight")
            for _ in range(config.num_vq))
