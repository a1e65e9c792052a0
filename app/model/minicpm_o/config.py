"""The checkpoint's config.json (model_type "minicpmo"), read into transformers' configs.

The published file is a Qwen3 config (the LLM's fields at the top level) with four
nested parts: `vision_config` (SigLIP NaViT), `audio_config` (Whisper encoder),
`tts_config` (the speech decoder) and `slice_config` (image slicing). Every size comes
from the file; where a key is absent, the value is the default of the class the official
code builds that part with (the format's own default, not a copy of the published value).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from app.model.contract import BackendError

MODEL_TYPE = "minicpmo"
_PARTS = ("vision_config", "audio_config", "tts_config", "slice_config")
# Keys of config.json that describe the file, not the LLM.
_NOT_LLM = ("model_type", "architectures", "auto_map", "transformers_version", *_PARTS)


@dataclass(frozen=True)
class SliceConfig:
    """How the official processor slices images; duplex frames are never sliced."""

    patch_size: int = 14
    max_slice_nums: int = 9
    scale_resolution: int = 448


@dataclass(frozen=True)
class TTSConfig:
    """The speech decoder's sizes (the official MiniCPMTTSConfig's keys and defaults).

    Only what builds the module tree is read here; part 2 (speech) reads the rest from
    `raw` when it needs it.
    """

    llm_dim: int = 2560
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_attention_heads: int = 12
    num_hidden_layers: int = 20
    num_key_value_heads: int = 12
    max_position_embeddings: int = 4096
    num_audio_tokens: int = 4097
    num_text_tokens: int = 21178
    num_vq: int = 1
    projector_type: str = "mlp"
    hidden_act: str = "silu"
    backbone_model: str = "llama"
    audio_bos_token_id: int = 21132
    text_eos_token_id: int = 21133
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> TTSConfig:
        known = {f.name for f in fields(cls)} - {"raw"}
        return cls(**{k: v for k, v in data.items() if k in known}, raw=dict(data))


@dataclass
class MiniCPMOConfig:
    """One MiniCPM-o checkpoint's configuration, split into its parts' configs."""

    text: Any  # transformers.Qwen3Config: the LLM (`llm`)
    vision: Any  # transformers MiniCPMV4_6VisionConfig: the SigLIP NaViT tower (`vpm`)
    audio: Any  # transformers.WhisperConfig: the audio encoder (`apm`)
    tts: TTSConfig
    slice: SliceConfig
    query_num: int = 64  # resampler queries = embeddings per image
    image_size: int = 448  # duplex frames are resized to about this many pixels a side
    drop_vision_last_layer: bool = True  # the checkpoint stores all but the last SigLIP layer
    audio_pool_step: int = 5  # encoder frames (50/s) averaged per audio embedding
    audio_chunk_length: float = 1.0  # seconds of audio per streaming unit
    init_vision: bool = True
    init_audio: bool = True
    init_tts: bool = True
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def llm_hidden(self) -> int:
        return int(self.text.hidden_size)

    @property
    def vision_layers(self) -> int:
        """SigLIP layers the checkpoint stores and the tower runs."""
        n = int(self.vision.num_hidden_layers)
        return n - 1 if self.drop_vision_last_layer else n

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "config.json") -> MiniCPMOConfig:
        from transformers import Qwen3Config, WhisperConfig
        from transformers.models.minicpmv4_6.configuration_minicpmv4_6 import (
            MiniCPMV4_6VisionConfig,
        )

        if data.get("model_type") != MODEL_TYPE:
            raise BackendError(
                f"{where} has model_type {data.get('model_type')!r}, not {MODEL_TYPE!r}",
                hint="point to a MiniCPM-o 4.5 checkpoint folder",
            )
        llm = {k: v for k, v in data.items() if k not in _NOT_LLM}
        vision = dict(data.get("vision_config") or {})
        vision.pop("model_type", None)
        audio = dict(data.get("audio_config") or {})
        audio.pop("model_type", None)
        try:
            text = Qwen3Config(**llm)
            vision_cfg = MiniCPMV4_6VisionConfig(**vision)
            audio_cfg = WhisperConfig(**audio)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"{where} cannot be read as a MiniCPM-o config ({exc})",
                               hint="download config.json again") from exc
        slice_raw = data.get("slice_config") or {}
        slice_keys = {f.name for f in fields(SliceConfig)}
        top = {f.name for f in fields(cls)} - {"text", "vision", "audio", "tts", "slice", "raw"}
        return cls(
            text=text,
            vision=vision_cfg,
            audio=audio_cfg,
            tts=TTSConfig.from_dict(data.get("tts_config") or {}),
            slice=SliceConfig(**{k: v for k, v in slice_raw.items() if k in slice_keys}),
            raw=dict(data),
            **{k: data[k] for k in top if k in data},
        )

    @classmethod
    def from_folder(cls, folder: Path) -> MiniCPMOConfig:
        path = Path(folder) / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackendError(f"{path} is missing",
                               hint="the checkpoint folder needs its config.json") from None
        except (OSError, ValueError) as exc:
            raise BackendError(f"{path} cannot be read ({exc})",
                               hint="download config.json again") from exc
        if not isinstance(data, dict):
            raise BackendError(f"{path} is not a JSON object", hint="download config.json again")
        return cls.from_dict(data, where=str(path))
