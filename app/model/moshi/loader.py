"""Loading a Moshi/PersonaPlex checkpoint: either layout, any quantization this machine runs.

Two layouts reach the same in-memory model, transformers' MoshiForConditionalGeneration:

* transformers' own (config.json with model_type "moshi", e.g. kmhf/hf-moshiko): loaded
  with `from_pretrained`, quantized there by bitsandbytes;
* the `moshi` package's (Kyutai's moshiko-pytorch-*, NVIDIA's personaplex-7b-v1): the LM
  and Mimi safetensors are read and renamed in memory (layout.py) into a model built on
  the meta device, then the main transformer's Linears are quantized in place. Nothing
  is converted on disk.

Kept in floating point whatever the quant: Mimi (the codec is small and precision
decides its sound), the depth transformer (its per-codebook weights are stacked
tensors, not Linears) and the text head.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from app.model import checkpoint, quant
from app.model.contract import BackendError, ModelSource, Progress, Quant
from app.model.moshi import layout
from app.model.moshi.text import TEXT_EPAD_ID, TEXT_PAD_ID, TextVocab
from app.model.moshi.tiny import DUETTO_META, STANDARD_DELAYS
from app.model.qwen_omni.loader import resolve_folder

log = logging.getLogger(__name__)

FAMILY = "moshi"
SKIP_MODULES = ("audio_encoder", "depth_decoder", "lm_head")
# Kyutai's published architecture (moshi.models.loaders' _lm_kwargs), for moshi-layout
# folders whose config.json does not say: 128-wide heads in the temporal transformer,
# 16 heads in the 1024-wide depth transformer, a 3000-frame context.
_MAIN_HEAD_DIM = 128
_DEPTH_HEADS = 16
_CONTEXT = 3000


@dataclass
class Loaded:
    model: torch.nn.Module  # MoshiForConditionalGeneration, eval mode
    vocab: TextVocab
    folder: Path
    device: torch.device
    dtype: torch.dtype
    quant: Quant
    delays: tuple[int, ...]
    layout: str  # "transformers" or "moshi"
    meta: dict = field(default_factory=dict)  # duetto.json (tiny models)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"{path} cannot be read ({exc})",
                           hint="download or copy the checkpoint again") from exc
    return data if isinstance(data, dict) else {}


def detect_layout(folder: Path) -> str:
    """ "transformers" or "moshi", from the folder's files alone."""
    config_path = folder / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    if config.get("model_type") == "moshi" or "MoshiForConditionalGeneration" in (
        config.get("architectures") or []
    ):
        return "transformers"
    lm_name = str(config.get("moshi_name", "model.safetensors"))
    if (folder / lm_name).is_file() and _mimi_file(folder, config) is not None:
        return "moshi"
    if config_path.is_file() and config.get("model_type"):
        # Let the shared check name the family this folder belongs to.
        checkpoint.validate_checkpoint(folder, family=FAMILY)
    raise BackendError(
        f"{folder} is neither a transformers Moshi checkpoint (config.json with model_type "
        "moshi) nor a moshi-package one (model.safetensors + tokenizer-*.safetensors)",
        hint="point to a Moshi or PersonaPlex folder (kmhf/hf-moshiko, "
        "kyutai/moshiko-pytorch-bf16, nvidia/personaplex-7b-v1)",
    )


def _mimi_file(folder: Path, config: dict) -> Path | None:
    named = config.get("mimi_name")
    if named and (folder / str(named)).is_file():
        return folder / str(named)
    found = sorted(folder.glob("tokenizer-*.safetensors"))
    return found[0] if found else None


def read_meta(folder: Path) -> dict:
    path = folder / DUETTO_META
    return _read_json(path) if path.is_file() else {}


def _delays(config: dict, meta: dict) -> tuple[int, ...]:
    raw = config.get("delays") or meta.get("delays") or STANDARD_DELAYS
    delays = tuple(int(d) for d in raw)
    if len(delays) != 17:
        raise BackendError(
            f"the checkpoint's delays have {len(delays)} entries; Duetto drives 17 streams "
            "(text, 8 model codebooks, 8 user codebooks)",
            hint="this checkpoint's layout is not supported",
        )
    return delays


def load(source: ModelSource, q: Quant, progress: Progress, *,
         device: str | None = None) -> Loaded:
    device = device or default_device()
    ok, why = quant.quant_support(q, device)
    if not ok:
        raise BackendError(f"{q.value} cannot run on {device} here: {why}",
                           hint="pick another quantization (bf16 always works)")
    folder = resolve_folder(source, progress)
    kind = detect_layout(folder)
    meta = read_meta(folder)
    dtype = quant.torch_dtype(q, device)
    progress("loading weights", 0.1)
    context = f"loading {FAMILY} from {folder}"
    try:
        if kind == "transformers":
            checkpoint.validate_checkpoint(folder, family=FAMILY)
            checkpoint.check_fits(checkpoint.estimate_weight_bytes(folder, q), device)
            model = _load_transformers(folder, q, dtype, device)
            config = _read_json(folder / "config.json")
            pad = config.get("pad_token_id")
            pad = TEXT_PAD_ID if pad is None else int(pad)
            delays = _delays({}, meta)
        else:
            config = _read_json(folder / "config.json") if (folder / "config.json").is_file() \
                else {}
            model = _load_moshi_layout(folder, config, q, dtype, device)
            pad = int(config.get("existing_text_padding_id", TEXT_PAD_ID))
            delays = _delays(config, meta)
        vocab = TextVocab.from_folder(folder, pad_id=pad, epad_id=TEXT_EPAD_ID)
    except BackendError:
        raise
    except Exception as exc:
        raise checkpoint.explain_load_error(exc, context) from exc
    # Mimi must run in float32 on the CPU and is small: keep it there in full precision
    # wherever the LM is, unless the LM is on a GPU (then float32 on the GPU).
    model.audio_encoder.float()
    model.eval()
    progress("loaded", 1.0)
    return Loaded(model=model, vocab=vocab, folder=folder, device=torch.device(device),
                  dtype=dtype, quant=q, delays=delays, layout=kind, meta=meta)


# --- transformers' layout --------------------------------------------------------------


def _skip_modules(model_or_config, q: Quant, device: str) -> list[str]:
    skip = list(SKIP_MODULES)
    if q is not Quant.NF4:
        return skip
    from accelerate import init_empty_weights
    from transformers import MoshiForConditionalGeneration

    with init_empty_weights():
        skeleton = MoshiForConditionalGeneration(model_or_config)
    return skip + quant.unquantizable_linears(skeleton, q, device=device)


def _mimi_in_float32():
    """transformers' Moshi class, with Mimi read from the file straight into float32.

    `from_pretrained(dtype=bf16)` would cast Mimi's weights to bfloat16 as they load, and
    `.float()` afterwards cannot give back the bits the cast dropped; transformers'
    `_keep_in_fp32_modules_strict` loads the named modules in float32 instead.
    """
    from transformers import MoshiForConditionalGeneration

    class MoshiWithFloat32Mimi(MoshiForConditionalGeneration):
        _keep_in_fp32_modules_strict: ClassVar[list[str]] = ["audio_encoder"]

    return MoshiWithFloat32Mimi


def _load_transformers(folder: Path, q: Quant, dtype: torch.dtype, device: str):
    from transformers import AutoConfig

    kwargs: dict = {"dtype": dtype, "device_map": {"": device}}
    if q in (Quant.INT8, Quant.NF4):
        config = AutoConfig.from_pretrained(folder)
        kwargs["quantization_config"] = quant.bnb_config(
            q, _skip_modules(config, q, device), device=device)
    return _mimi_in_float32().from_pretrained(folder, **kwargs)


# --- the moshi package's layout ----------------------------------------------------------


def moshi_layout_config(lm: dict[str, torch.Tensor], mimi: dict[str, torch.Tensor],
                        config: dict):  # -> MoshiConfig
    """transformers' MoshiConfig for moshi-layout tensors and Kyutai's LM settings."""
    from transformers import MimiConfig, MoshiConfig

    shapes = layout.lm_shapes(lm)
    dim = shapes["hidden_size"]
    heads = int(config.get("num_heads", dim // _MAIN_HEAD_DIM))
    depth_heads = int(config.get("depformer_num_heads", _DEPTH_HEADS))
    context = int(config.get("context", _CONTEXT))
    mimi_config = dict(config.get("mimi_config") or {})
    if not mimi_config:
        # The published Mimi (moshi.models.loaders' seanet/transformer settings) is
        # transformers' MimiConfig defaults; the quantizer count is read from the file.
        rest = {n for n in mimi if n.startswith("quantizer.rvq_rest.vq.layers.")}
        layers = {n.split(".layers.")[1].split(".")[0] for n in rest}
        mimi_config = MimiConfig(num_quantizers=1 + len(layers)).to_dict()
    mimi_config["model_type"] = "mimi"
    return MoshiConfig(
        vocab_size=shapes["vocab_size"],
        hidden_size=dim,
        num_hidden_layers=shapes["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=int(config.get("num_kv_heads", heads)),
        ffn_dim=shapes["ffn_dim"],
        max_position_embeddings=context,
        sliding_window=context,
        rope_parameters={"rope_type": "default",
                         "rope_theta": float(config.get("max_period", 10000))},
        num_codebooks=8,
        pad_token_id=int(config.get("existing_text_padding_id", TEXT_PAD_ID)),
        audio_encoder_config=mimi_config,
        depth_decoder_config={
            "hidden_size": shapes["depth_hidden_size"],
            "num_hidden_layers": shapes["depth_layers"],
            "num_attention_heads": depth_heads,
            "ffn_dim": shapes["depth_ffn_dim"],
            "max_position_embeddings": 9,
            "sliding_window": 8,
        },
    )


def moshi_layout_state(lm: dict[str, torch.Tensor], mimi: dict[str, torch.Tensor],
                       moshi_config) -> dict[str, torch.Tensor]:
    """transformers' names for a moshi-layout LM and Mimi. The fused LM tensors are
    dropped from `lm` as they are split (the caller's dict shrinks as the new one grows)."""
    state = layout.lm_from_moshi(lm, heads=moshi_config.num_attention_heads,
                                 kv_heads=moshi_config.num_key_value_heads, release=True)
    mimi_heads = moshi_config.audio_encoder_config.num_attention_heads
    state.update({f"audio_encoder.{k}": v for k, v in
                  layout.mimi_from_moshi(mimi, heads=mimi_heads).items()})
    return state


def check_state(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                folder: Path) -> None:
    """Every tensor the model has, none it lacks, each of its shape; else a BackendError."""
    missing, extra = set(expected) - set(state), set(state) - set(expected)
    if missing or extra:
        raise BackendError(
            f"{folder}'s weights do not match a Moshi model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(extra)[:3]})",
            hint="this checkpoint's layout is not supported, or its files are damaged",
        )
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(t.shape)})"
             for k, t in expected.items() if tuple(state[k].shape) != tuple(t.shape)]
    if wrong:
        raise BackendError(f"{folder}'s weights have unexpected shapes: {'; '.join(wrong[:3])}",
                           hint="this checkpoint's layout is not supported, or its files "
                           "are damaged")


def _load_moshi_layout(folder: Path, config: dict, q: Quant, dtype: torch.dtype, device: str):
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import MoshiForConditionalGeneration

    lm_path = folder / str(config.get("moshi_name", "model.safetensors"))
    mimi_path = _mimi_file(folder, config)
    assert mimi_path is not None  # detect_layout checked
    # Unquantized on a GPU, the LM's tensors go straight to it (no 16 GB copy in RAM);
    # bitsandbytes quantizes from CPU tensors as they move to the device.
    unquantized = q in (Quant.BF16, Quant.FP16)
    lm = load_file(str(lm_path), device=device if unquantized else "cpu")
    mimi = load_file(str(mimi_path))
    moshi_config = moshi_layout_config(lm, mimi, config)
    if device.startswith("cuda"):
        checkpoint.check_fits(int(sum(t.numel() for t in lm.values()) *
                                  (2 if q in (Quant.BF16, Quant.FP16) else 1)), device)
    state = moshi_layout_state(lm, mimi, moshi_config)
    del lm, mimi
    with init_empty_weights():
        model = MoshiForConditionalGeneration(moshi_config)
    check_state(model.state_dict(), state, folder)
    # The LM in the compute dtype; Mimi stays in float32 from the file (casting it to
    # bf16 first would drop bits a later .float() cannot give back).
    state = {k: (v.to(torch.float32 if k.startswith("audio_encoder.") else dtype)
                 if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state, assign=True, strict=True)
    # init_empty_weights leaves buffers (rotary frequencies, conv bookkeeping) real; a
    # tensor still on the meta device here would be a weight the mapping forgot.
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise BackendError(f"{folder}: no weights for {left[:3]}",
                           hint="this checkpoint's layout is not supported")
    if q in (Quant.INT8, Quant.NF4):
        from app.model.moshi.quantize import quantize_linears

        quantize_linears(model.decoder.model, q, device,
                         skip=quant.unquantizable_linears(model.decoder.model, q, device=device))
    return model.to(device)
