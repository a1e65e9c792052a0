"""Loading a Moshi/PersonaPlex checkpoint: either layout, any quantization this machine runs.

Two layouts reach the same in-memory model, transformers' MoshiForConditionalGeneration:

* transformers' own (config.json with model_type "moshi", e.g. kmhf/hf-moshiko): loaded
  with `from_pretrained`, quantized there by bitsandbytes;
* the `moshi` package's (Kyutai's moshiko-pytorch-*, NVIDIA's personaplex-7b-v1): the LM
  and Mimi safetensors are read and renamed in memory (layout.py) into a model built on
  the meta device, then the main transformer's Linears are quantized in place. Nothing
  is converted on disk.

What is quantized, what stays in system RAM and which dtype each part gets is the
placement rule's (placement.py), the same rule the memory plan counts; the plan is
checked against the free memory before any weight is read (fit.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.model import checkpoint, fit, hf_load, memory_plan, quant
from app.model.contract import BackendError, ModelSource, Progress, Quant
from app.model.memory_plan import Plan
from app.model.moshi import layout
from app.model.moshi.text import TEXT_EPAD_ID, TEXT_PAD_ID, TextVocab
from app.model.moshi.tiny import DUETTO_META, STANDARD_DELAYS
from app.model.place import place
from app.model.placement import Placement, float_prefixes, rules_for
from app.model.qwen_omni.loader import resolve_folder

log = logging.getLogger(__name__)

FAMILY = "moshi"
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
    plan: Plan | None = None  # the memory plan it was loaded under (memory_plan.py)
    placement: Placement | None = None
    context_note: str = ""  # which context (frames) was chosen, and why


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
         device: str | None = None, context: int | None = None) -> Loaded:
    """Load a Moshi/PersonaPlex folder as the placement rule says, after the memory plan
    said it fits the free memory. `context`: frames in the conversation's window; None
    picks the longest the device holds (up to the model's own 3000)."""
    device = device or default_device()
    ok, why = quant.quant_support(q, device)
    if not ok:
        raise BackendError(f"{q.value} cannot run on {device} here: {why}",
                           hint="pick another quantization (bf16 always works)")
    folder = resolve_folder(source, progress)
    kind = detect_layout(folder)
    meta = read_meta(folder)
    text = f"loading {FAMILY} from {folder}"
    raw = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if kind == "transformers":
        checkpoint.validate_checkpoint(folder, family=FAMILY)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        pad = raw.get("pad_token_id")
        pad = TEXT_PAD_ID if pad is None else int(pad)
        delays = _delays({}, meta)
    else:
        config = moshi_layout_config_from_headers(folder)
        pad = int(raw.get("existing_text_padding_id", TEXT_PAD_ID))
        delays = _delays(raw, meta)
    sized, placement, skel = prepare(config, q, device, context, name=str(folder), layout=kind)
    progress("loading weights", 0.1)
    try:
        if kind == "transformers":
            model = _load_transformers(folder, q, placement.float_dtype, device, placement, skel)
        else:
            model = _load_moshi_layout(folder, raw, q, placement.float_dtype, device, placement)
        vocab = TextVocab.from_folder(folder, pad_id=pad, epad_id=TEXT_EPAD_ID)
    except BackendError:
        raise
    except Exception as exc:
        raise checkpoint.explain_load_error(exc, text) from exc
    set_context(model, sized.plan.context)
    progress("loaded", 1.0)
    return Loaded(model=model, vocab=vocab, folder=folder, device=torch.device(device),
                  dtype=placement.float_dtype, quant=q, delays=delays, layout=kind, meta=meta,
                  plan=sized.plan, placement=placement, context_note=sized.note)


def load_random(q: Quant, *, device: str = "cuda", context: int | None = None,
                seed: int = 0) -> Loaded:
    """The published Moshi 7B architecture (published.py: moshiko's, and PersonaPlex's once
    loaded) with random weights made on the device, loaded through the same path as a
    transformers-layout checkpoint, after the same fit check (bench gpu)."""
    from app.model.published import moshi_config

    return load_generated(moshi_config(), q, device=device, context=context,
                          name="random moshi 7B", seed=seed)


def load_generated(config, q: Quant, *, device: str, context: int | None = None,
                   name: str = "random", seed: int = 0) -> Loaded:
    """`config`'s architecture with random weights made on `device` (random_weights.py)."""
    import tempfile

    from transformers import MoshiForConditionalGeneration

    from app.model import random_weights
    from app.model.moshi.tiny import spm_model_bytes, tiny_pieces

    sized, placement, skel = prepare(config, q, device, context, name=name)
    weights = random_weights.state_dict(skel, device, placement.float_dtype,
                                        on_cpu=tuple(hf_load.cpu_modules(placement, skel)),
                                        seed=seed)
    model = hf_load.from_pretrained(MoshiForConditionalGeneration, placement, skel,
                                    config=config, state_dict=weights)
    set_context(model, sized.plan.context)
    with tempfile.TemporaryDirectory() as tmp:
        # Random weights speak random ids: a stand-in vocabulary is enough to decode them.
        (Path(tmp) / "tokenizer_spm_32k_3.model").write_bytes(spm_model_bytes(tiny_pieces()))
        vocab = TextVocab.from_folder(Path(tmp))
    return Loaded(model=model, vocab=vocab, folder=Path(f"<{name}>"),
                  device=torch.device(device), dtype=placement.float_dtype, quant=q,
                  delays=STANDARD_DELAYS, layout="transformers", plan=sized.plan,
                  placement=placement, context_note=sized.note)


def prepare(config, q: Quant, device: str, context: int | None, *, name: str,
            layout: str = "transformers", free: int | None = None,
            ) -> tuple[fit.Sized, Placement, torch.nn.Module]:
    """The plan (checked against the free memory: BackendError if it does not fit), the
    placement and the module tree without memory, before any weight is read."""
    dtype = quant.torch_dtype(q, device)
    skel = memory_plan.skeleton(FAMILY, config, dtype)
    placement = Placement.for_device(FAMILY, q, device, skel)
    planner = memory_plan.Planner(FAMILY, config, device=device, float_dtype=dtype, name=name,
                                  layout=layout, skeleton_model=skel)
    return fit.size(planner, q, context, device, free=free), placement, skel


def set_context(model: torch.nn.Module, frames: int) -> None:
    """Make the temporal transformer attend to the last `frames` frames: its cache and
    its attention mask both follow `sliding_window` (transformers' sliding-window layers
    keep that many positions)."""
    model.config.sliding_window = int(frames)
    decoder_config = getattr(model.decoder, "config", None)
    if decoder_config is not None and decoder_config is not model.config:
        decoder_config.sliding_window = int(frames)


def moshi_layout_config_from_headers(folder: Path):  # -> MoshiConfig
    """The MoshiConfig of a moshi-layout folder, from its files' headers alone."""
    raw = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    lm_path = folder / str(raw.get("moshi_name", "model.safetensors"))
    mimi_path = _mimi_file(folder, raw)
    if mimi_path is None or not lm_path.is_file():
        detect_layout(folder)  # raises the explanation
    return moshi_layout_config(checkpoint.header_tensors(lm_path),
                               checkpoint.header_tensors(mimi_path), raw)


# --- transformers' layout --------------------------------------------------------------

# Modules whose Linears the placement rule keeps in floating point (placement.py); the
# loaders ask the rule itself (Placement.skip_modules), this names them for reference.
SKIP_MODULES = float_prefixes(FAMILY)


def _mimi_in_float32():
    """transformers' Moshi class, with Mimi read from the file straight into float32.

    `from_pretrained(dtype=bf16)` would cast Mimi's weights to bfloat16 as they load, and
    `.float()` afterwards cannot give back the bits the cast dropped; transformers'
    `_keep_in_fp32_modules_strict` loads the parts the rule keeps in float32 (Mimi) in
    float32 instead (hf_load.loading_class).
    """
    from transformers import MoshiForConditionalGeneration

    return hf_load.loading_class(MoshiForConditionalGeneration, rules_for(FAMILY),
                                 torch.bfloat16)


def _load_transformers(folder: Path, q: Quant, dtype: torch.dtype, device: str,
                       placement: Placement | None = None, skeleton=None):
    """A transformers-layout folder through from_pretrained, as the rule says."""
    from transformers import AutoConfig, MoshiForConditionalGeneration

    if skeleton is None:
        skeleton = memory_plan.skeleton(FAMILY, AutoConfig.from_pretrained(folder), dtype)
    if placement is None:
        placement = Placement(FAMILY, q, device, dtype,
                              quant.unquantizable_linears(skeleton, q, device=device))
    return hf_load.from_pretrained(MoshiForConditionalGeneration, placement, skeleton,
                                   folder=folder)


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


def _load_moshi_layout(folder: Path, raw: dict, q: Quant, dtype: torch.dtype, device: str,
                       placement: Placement | None = None):
    """Map the moshi-layout files onto transformers' tree, then place every tensor.

    The files are memory-mapped: the renamed tensors are views of the file (and the ones
    the mapping rewrites, such as the split and permuted query/key rows, new CPU tensors
    that own their storage), and `place()` moves or quantizes each one to where the rule
    wants it, in its part's dtype straight from the file's (Mimi's float32 never passes
    through 16 bits). The device holds only the final weights, plus one layer's float
    weight while bitsandbytes quantizes it; the full LM never sits in RAM.
    """
    lm_path = folder / str(raw.get("moshi_name", "model.safetensors"))
    mimi_path = _mimi_file(folder, raw)
    assert mimi_path is not None  # detect_layout checked
    lm = checkpoint.mmap_safetensors(lm_path)
    mimi = checkpoint.mmap_safetensors(mimi_path)
    config = moshi_layout_config(lm, mimi, raw)
    state = moshi_layout_state(lm, mimi, config)
    del lm, mimi
    model = memory_plan.skeleton(FAMILY, config, dtype, meta_buffers=False)
    check_state(model.state_dict(), state, folder)
    if placement is None:
        placement = Placement(FAMILY, q, device, dtype,
                              quant.unquantizable_linears(model, q, device=device))
    model.load_state_dict(state, assign=True, strict=True)
    del state
    # The skeleton leaves buffers real (rotary frequencies, conv bookkeeping); a tensor
    # still on the meta device here would be a weight the mapping forgot.
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise BackendError(f"{folder}: no weights for {left[:3]}",
                           hint="this checkpoint's layout is not supported")
    place(model, placement, placement.device, from_file=True)
    return model.eval()
