"""One memory plan: what a model costs on the device, part by part, before it is loaded.

For a family, a checkpoint's config, a quantization and a context length, the plan
builds the full-size module tree on the meta device (no memory, a second or two),
applies the very rule the loaders apply (placement.py) and counts, for every part:

* its weights by dtype (float parts) or by quantized store: NF4 packs two values a byte
  and keeps, per 64 values, one 8-bit scale (double quantization), plus per 256 scales
  one float32 scale, and 1.1 kB of code tables per layer; LLM.int8 keeps one byte a
  value and one float32 scale per row;
* the context reserved for a conversation: Qwen2.5-Omni's thinker and talker caches
  (reserved_cache.py, the capacity cache.py reserves), Moshi's window of frames,
  MiniCPM-o's sliding window with its audio encoder's and speech decoder's caches
  (minicpm_o/memory.py, which also counts its speech vocoder's files);
* a working-memory allowance: the activations of the largest forward pass the backend
  runs, from the shapes (see `_qwen_working` and `_moshi_working`). It is an estimate
  until the GPU check (`duetto bench gpu`) measures it; its figure is printed there;
* while loading (`load_bytes`): the weights plus the one float weight bitsandbytes is
  quantizing at a time.

On CUDA every allocation is rounded up to the caching allocator's 512-byte blocks; on
the CPU the plan counts bytes exactly, and tests hold it to what the loader allocates.

Every VRAM figure the app shows or checks comes from here.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.model.building import building
from app.model.contract import BackendError, Quant
from app.model.place import DEVICE, HOST
from app.model.placement import Placement, Store, buffer_dtype

GIB = 1024**3
CUDA_BLOCK = 512  # PyTorch's CUDA caching allocator rounds every block up to this
CUBLAS_WORKSPACE = 32 * 1024**2  # cuBLAS' default workspaces (":4096:8"), from the pool

# Contexts: Qwen2.5-Omni counts tokens (what the backend calls token_budget); Moshi
# counts 80 ms frames (one position of its temporal transformer each).
QWEN_MIN_CONTEXT = 2048
QWEN_DEFAULT_CONTEXT = 16384
MOSHI_MIN_CONTEXT = 250  # 20 s
# NF4 blocks and double quantization as transformers' BitsAndBytesConfig and
# bitsandbytes 0.50 use them (Params4bit defaults; quant.bnb_config).
NF4_BLOCK = 64
NF4_SCALE_BLOCK = 256
NF4_CODE_BYTES = 16 * 4  # the NF4 value table, float32
NF4_SCALE_CODE_BYTES = 256 * 4  # the 8-bit dynamic map of the double quantization
NF4_OFFSET_BYTES = 4


@dataclass(frozen=True)
class Part:
    """One line of a plan. `kind`: "weights", "context" or "working"; `where`: DEVICE
    (the GPU, or the CPU on a CPU run) or HOST (system RAM beside a GPU run)."""

    name: str
    kind: str
    where: str
    bytes: int
    by_dtype: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "where": self.where,
                "bytes": self.bytes, "gib": round(self.bytes / GIB, 3),
                "by_dtype": dict(self.by_dtype), "note": self.note}


@dataclass(frozen=True)
class Plan:
    model: str  # registry id or folder
    family: str
    quant: Quant
    device: str  # "cuda" or "cpu"
    float_dtype: torch.dtype
    context: int
    context_unit: str  # "tokens" or "frames"
    max_context: int
    parts: tuple[Part, ...]
    load_extra: int  # on the device while loading, beyond the weights it ends with
    layout: str = "transformers"  # which loading path builds it
    notes: tuple[str, ...] = ()

    def total(self, kind: str | None = None, where: str = DEVICE) -> int:
        return sum(p.bytes for p in self.parts
                   if p.where == where and (kind is None or p.kind == kind))

    @property
    def weights_bytes(self) -> int:
        return self.total("weights")

    @property
    def run_bytes(self) -> int:
        """On the device during a conversation: weights + context + working memory."""
        return self.total()

    @property
    def load_bytes(self) -> int:
        """On the device at the peak of loading."""
        return self.weights_bytes + self.load_extra

    @property
    def total_bytes(self) -> int:
        """What the device must have free: the larger of loading and running."""
        return max(self.run_bytes, self.load_bytes)

    @property
    def host_bytes(self) -> int:
        return self.total(where=HOST)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def to_json(self) -> dict:
        return {
            "id": self.model, "family": self.family, "quant": self.quant.value,
            "device": self.device, "float_dtype": str(self.float_dtype).removeprefix("torch."),
            "layout": self.layout,
            "context_tokens": self.context, "context_unit": self.context_unit,
            "max_context": self.max_context,
            "total_gib": round(self.total_gib, 3), "run_gib": round(self.run_bytes / GIB, 3),
            "load_gib": round(self.load_bytes / GIB, 3),
            "host_gib": round(self.host_bytes / GIB, 3),
            "parts": [p.to_json() for p in self.parts], "notes": list(self.notes),
        }

    def lines(self) -> list[str]:
        """The plan as a table, part by part."""
        where = {DEVICE: "GPU" if self.device != "cpu" else "CPU", HOST: "RAM"}
        out = [f"{self.model}: {self.family}, {self.quant.value}, "
               f"{self.context} {self.context_unit} of context (max {self.max_context}), "
               f"{str(self.float_dtype).removeprefix('torch.')} on {self.device}"]
        for p in self.parts:
            kinds = ", ".join(f"{k} {v / GIB:.2f}" for k, v in p.by_dtype.items()
                              if v >= GIB / 200)
            out.append(f"  {where[p.where]:<3} {p.kind:<8} {p.name:<22} {p.bytes / GIB:7.2f} GiB"
                       + (f"  ({kinds})" if kinds and "," in kinds else "")
                       + (f"  {p.note}" if p.note else ""))
        out.append(f"  while loading: {self.load_bytes / GIB:.2f} GiB; running: "
                   f"{self.run_bytes / GIB:.2f} GiB; system RAM beside it: "
                   f"{self.host_bytes / GIB:.2f} GiB")
        out.append(f"  total: {self.total_gib:.2f} GiB of GPU memory")
        out += [f"  note: {n}" for n in self.notes]
        return out


# --- the module tree -------------------------------------------------------------------


def model_class(family: str) -> type:
    if family == "qwen2.5-omni":
        from transformers import Qwen2_5OmniForConditionalGeneration

        return Qwen2_5OmniForConditionalGeneration
    if family == "moshi":
        from transformers import MoshiForConditionalGeneration

        return MoshiForConditionalGeneration
    raise BackendError(f"no memory plan for the model family {family!r}",
                       hint="plan a Qwen2.5-Omni, Moshi/PersonaPlex or MiniCPM-o checkpoint")


def skeleton(family: str, config, float_dtype: torch.dtype, *,
             meta_buffers: bool = True) -> torch.nn.Module:
    """The model's module tree without memory, built as transformers' from_pretrained
    builds it (float parameters created in `float_dtype`). `meta_buffers=False` keeps
    buffers real (a loader that assigns weights into the tree needs them)."""
    if family == "minicpm-o":
        from app.model.minicpm_o import loader as minicpmo_loader

        return minicpmo_loader.skeleton(config, float_dtype)  # our own tree, buffers real
    from accelerate import init_empty_weights
    from transformers.utils import logging as hf_logging

    previous_log = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # config warnings about ids, printed at every build
    try:
        with building(float_dtype), init_empty_weights(include_buffers=meta_buffers):
            model = model_class(family)(config)
    finally:
        hf_logging.set_verbosity(previous_log)
    return model.eval()


# --- bytes of tensors ------------------------------------------------------------------


def _rounder(device: str):
    if torch.device(device).type == "cuda":
        return lambda n: -(-n // CUDA_BLOCK) * CUDA_BLOCK if n else 0
    return lambda n: n


def nf4_bytes(numel: int, rnd=lambda n: n) -> tuple[int, int]:
    """(packed weight, quantization state) bytes of one NF4 weight of `numel` values."""
    blocks = math.ceil(numel / NF4_BLOCK)
    state = (rnd(blocks) + rnd(NF4_CODE_BYTES) + rnd(NF4_OFFSET_BYTES)
             + rnd(4 * math.ceil(blocks / NF4_SCALE_BLOCK)) + rnd(NF4_SCALE_CODE_BYTES))
    return rnd((numel + 1) // 2), state


def int8_bytes(rows: int, cols: int, rnd=lambda n: n) -> tuple[int, int]:
    """(int8 weight, per-row float32 scales) bytes of one LLM.int8 weight."""
    return rnd(rows * cols), rnd(4 * rows)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize


def weight_bytes(model: torch.nn.Module, placement: Placement
                 ) -> dict[tuple[str, str], Counter]:
    """Per (part, where): bytes by dtype name, "nf4"/"int8" and "quant state"."""
    rnd = _rounder(placement.device)
    out: dict[tuple[str, str], Counter] = {}
    for _name, module, d in placement.decisions(model):
        where = HOST if d.host else DEVICE
        counts = out.setdefault((d.part, where), Counter())
        for pname, param in module.named_parameters(recurse=False):
            if pname == "weight" and d.store is Store.NF4:
                packed, state = nf4_bytes(param.numel(), rnd)
                counts["nf4"] += packed
                counts["quant state"] += state
            elif pname == "weight" and d.store is Store.INT8:
                data, scales = int8_bytes(param.shape[0], param.shape[1], rnd)
                counts["int8"] += data
                counts["quant state"] += scales
            else:
                dtype = d.dtype if param.is_floating_point() else param.dtype
                counts[_dtype_name(dtype)] += rnd(param.numel() * _itemsize(dtype))
        for bname, buf in module.named_buffers(recurse=False):
            if buf is None:
                continue
            dtype = buffer_dtype(d, bname, buf)
            counts[_dtype_name(dtype)] += rnd(buf.numel() * _itemsize(dtype))
    return {k: v for k, v in out.items() if sum(v.values())}


def _largest_float_linear(model: torch.nn.Module, placement: Placement) -> int:
    """Bytes of the largest Linear weight quantized while loading, in float: bitsandbytes
    quantizes each weight from a float copy on the device."""
    sizes = [m.weight.numel() * _itemsize(placement.float_dtype)
             for _, m, d in placement.decisions(model)
             if isinstance(m, torch.nn.Linear) and d.store is not Store.FLOAT]
    return max(sizes, default=0)


# --- context and working memory ----------------------------------------------------------


def _head_dim(cfg) -> int:
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _kv_layer_bytes(cfg, tokens: int, itemsize: int, rnd) -> int:
    """Keys and values of one decoder layer for `tokens` positions."""
    return 2 * rnd(cfg.num_key_value_heads * tokens * _head_dim(cfg) * itemsize)


def _qwen_context(config, context: int, itemsize: int, rnd, talker_headroom: int) -> list[Part]:
    from app.model.qwen_omni.cache import reserved_tokens

    thinker_tokens, talker_tokens = reserved_tokens(context, talker_headroom)
    parts = []
    for name, cfg, tokens in (("thinker context", config.thinker_config.text_config,
                               thinker_tokens),
                              ("talker context", config.talker_config, talker_tokens)):
        size = cfg.num_hidden_layers * _kv_layer_bytes(cfg, tokens, itemsize, rnd)
        parts.append(Part(name, "context", DEVICE, size,
                          note=f"{tokens} tokens reserved × {cfg.num_hidden_layers} layers"))
    return parts


def _qwen_working(config, context: int, itemsize: int, placement: Placement,
                  model: torch.nn.Module) -> Part:
    """The largest forward pass's activations (an estimate from the shapes).

    A prefill pass of C tokens (cache.PREFILL_CHUNK_TOKENS, the most the backend sends at
    once) over a full context: the residual stream and attention in/out (6·C·hidden),
    the gated MLP (3·C·intermediate), keys and values expanded to every query head over
    the whole context (attention with a mask repeats them: 2·heads·ctx·head_dim), the
    mask (C·ctx booleans and their 16-bit additive form), and under nf4 the largest
    weight dequantized for the pass (bitsandbytes does that for more than one token),
    under int8 the int32 product of the widest Linear. Only the last position's logits
    are computed (cache.thinker_pass).
    The talker's pass over the same tokens is smaller and comes after.
    """
    from app.model.qwen_omni.cache import PREFILL_CHUNK_TOKENS

    cfg = config.thinker_config.text_config
    c = PREFILL_CHUNK_TOKENS
    ctx = context
    terms = {
        "activations": itemsize * (6 * c * cfg.hidden_size + 3 * c * cfg.intermediate_size),
        "attention keys/values": 2 * itemsize * cfg.num_attention_heads * ctx * _head_dim(cfg),
        "attention mask": 3 * c * ctx,  # boolean, and its 16-bit additive form
        "logits": 4 * cfg.vocab_size,
    }
    linears = [(m.out_features, m.in_features, d.store) for _, m, d in placement.decisions(model)
               if isinstance(m, torch.nn.Linear) and d.part == "thinker"]
    if placement.quant is Quant.NF4:
        terms["dequantized weight"] = itemsize * max((o * i for o, i, s in linears
                                                      if s is Store.NF4), default=0)
    elif placement.quant is Quant.INT8:
        terms["int8 product"] = 4 * c * max((o for o, _, s in linears if s is Store.INT8),
                                            default=0)
    if placement.gpu:
        terms["cuBLAS workspace"] = CUBLAS_WORKSPACE
    return Part("working memory", "working", DEVICE, sum(terms.values()), dict(terms),
                note=f"estimate: a {c}-token pass over {ctx} tokens (memory_plan._qwen_working)")


def _moshi_context(config, context: int, itemsize: int, rnd) -> list[Part]:
    # transformers' sliding-window cache keeps the window as a view of the last
    # concatenation: `context` positions of keys and values per layer.
    size = config.num_hidden_layers * _kv_layer_bytes(config, context, itemsize, rnd)
    return [Part("context", "context", DEVICE, size,
                 note=f"{context} frames ({context * 0.08:.0f} s) × "
                      f"{config.num_hidden_layers} layers")]


def _moshi_working(config, context: int, itemsize: int, placement: Placement) -> Part:
    """One 80 ms frame (an estimate from the shapes).

    The cache's concatenation copies one layer's keys and values while the old ones are
    alive (2 × one layer at the full window); Mimi's streaming encoder and decoder keep
    their transformers' caches (float32, Mimi's own window); one token's activations
    through both transformers and the logits are small. Persona prefixes kept for reuse
    sit in system RAM (engine.Snapshot).
    """
    mimi = config.audio_encoder_config
    mimi_window = int(getattr(mimi, "sliding_window", 250) or 250)
    terms = {
        "cache concatenation": 2 * _kv_layer_bytes(config, context, itemsize, lambda n: n),
        "Mimi caches": 2 * mimi.num_hidden_layers * 2 * mimi_window * mimi.hidden_size * 4,
        "activations": itemsize * 8 * (config.hidden_size + config.ffn_dim),
        "logits": 4 * (config.vocab_size + 8 * (config.audio_vocab_size or 2048)),
    }
    if placement.gpu:
        terms["cuBLAS workspace"] = CUBLAS_WORKSPACE
    return Part("working memory", "working", DEVICE, sum(terms.values()), dict(terms),
                note="estimate: one frame (memory_plan._moshi_working)")


def max_context(family: str, config) -> int:
    if family == "qwen2.5-omni":
        return int(config.thinker_config.text_config.max_position_embeddings)
    if family == "minicpm-o":
        return int(config.text.max_position_embeddings)
    return int(config.max_position_embeddings)


def min_context(family: str) -> int:
    if family == "minicpm-o":
        from app.model.minicpm_o.memory import MIN_WINDOW

        return MIN_WINDOW
    return QWEN_MIN_CONTEXT if family == "qwen2.5-omni" else MOSHI_MIN_CONTEXT


def default_context(family: str, config) -> int:
    if family == "qwen2.5-omni":
        return QWEN_DEFAULT_CONTEXT
    if family == "minicpm-o":
        from app.model.minicpm_o.memory import DEFAULT_WINDOW

        return DEFAULT_WINDOW
    return max_context(family, config)


def context_unit(family: str) -> str:
    return "frames" if family == "moshi" else "tokens"


# --- the plan ------------------------------------------------------------------------------


def _float_dtype(q: Quant, device: str, given: torch.dtype | None) -> torch.dtype:
    if given is not None:
        return given
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        # A card that is not here: assume one with native bf16 (compute capability 8.0+,
        # every NVIDIA card since 2020); fp16 asks for fp16 (same size).
        return torch.float16 if q is Quant.FP16 else torch.bfloat16
    from app.model import quant

    return quant.torch_dtype(q, device)


class Planner:
    """Plans of one checkpoint config on one device, for any quantization and context.

    The module tree is built once per float dtype and the weights are counted once per
    quantization, so trying many contexts (the longest that fits) costs milliseconds.
    """

    def __init__(self, family: str, config, *, device: str = "cuda",
                 float_dtype: torch.dtype | None = None, name: str = "",
                 layout: str = "transformers", talker_headroom: int | None = None,
                 skeleton_model: torch.nn.Module | None = None,
                 vocoder_files: dict[str, tuple[int, bool]] | None = None) -> None:
        self.family = family
        self.config = config
        self.device = str(device)
        self.given_dtype = float_dtype
        self.name = name or family
        self.layout = layout
        if talker_headroom is None and family == "qwen2.5-omni":
            from app.model.qwen_omni.speech import AnswerConfig

            talker_headroom = AnswerConfig().max_codes
        self.talker_headroom = talker_headroom or 0
        self._skeleton = skeleton_model
        # MiniCPM-o's speech vocoder is files beside the checkpoint: name -> (bytes, on
        # the device); None when the checkpoint has none.
        self.vocoder_files = vocoder_files
        self._weights: dict[Quant, tuple[Placement, list[Part], int]] = {}

    def dtype(self, q: Quant) -> torch.dtype:
        return _float_dtype(q, self.device, self.given_dtype)

    def skeleton(self, dtype: torch.dtype) -> torch.nn.Module:
        """The module tree, built once: its shapes and its buffers' dtypes (created in
        float32 by both families, whatever the default dtype) do not depend on the float
        dtype; the plan takes every float parameter's dtype from the rule."""
        if self._skeleton is None:
            self._skeleton = skeleton(self.family, self.config, dtype)
        return self._skeleton

    def placement(self, q: Quant) -> Placement:
        return self._weighed(q)[0]

    def _weighed(self, q: Quant) -> tuple[Placement, list[Part], int]:
        if q not in self._weights:
            dtype = self.dtype(q)
            skel = self.skeleton(dtype)
            from app.model import quant as quant_mod

            unquantizable = quant_mod.unquantizable_linears(skel, q, device=self.device) \
                if torch.device(self.device).type == "cpu" else []
            placement = Placement(self.family, q, self.device, dtype, unquantizable)
            parts = [Part(part, "weights", where, sum(counts.values()), dict(counts))
                     for (part, where), counts in weight_bytes(skel, placement).items()]
            # Loading: both loading paths keep what ends in system RAM or in int8 on the
            # CPU until it is placed (from_pretrained maps those modules to the CPU), so the
            # device only ever holds, beyond the final weights, the one float weight that
            # bitsandbytes is quantizing.
            extra = _largest_float_linear(skel, placement) if placement.gpu else 0
            self._weights[q] = (placement, parts, extra)
        return self._weights[q]

    def max_context(self) -> int:
        return max_context(self.family, self.config)

    def plan(self, q: Quant, context: int | None = None) -> Plan:
        """The plan under `q` with `context` tokens (Qwen; MiniCPM-o's window) or frames
        (Moshi), clamped to the model's maximum; None for the family's default."""
        placement, weight_parts, extra = self._weighed(q)
        dtype = placement.float_dtype
        rnd = _rounder(self.device)
        itemsize = _itemsize(dtype)
        limit = self.max_context()
        wanted = default_context(self.family, self.config) if context is None else int(context)
        ctx = max(1, min(wanted, limit))
        unit = context_unit(self.family)
        notes = []
        if wanted > limit:
            notes.append(f"{wanted} {unit} asked; the model's maximum is {limit}")
        parts = list(weight_parts)
        if self.family == "qwen2.5-omni":
            parts += _qwen_context(self.config, ctx, itemsize, rnd, self.talker_headroom)
            parts.append(_qwen_working(self.config, ctx, itemsize, placement,
                                       self.skeleton(dtype)))
        elif self.family == "minicpm-o":
            from app.model.minicpm_o import memory as minicpmo_memory

            parts += minicpmo_memory.context_parts(self.config, ctx, itemsize, rnd)
            parts += minicpmo_memory.vocoder_parts(self.vocoder_files, gpu=placement.gpu)
            parts.append(minicpmo_memory.working_part(
                self.config, ctx, itemsize, placement, self.skeleton(dtype),
                vocoder=bool(self.vocoder_files)))
        else:
            parts += _moshi_context(self.config, ctx, itemsize, rnd)
            parts.append(_moshi_working(self.config, ctx, itemsize, placement))
        return Plan(model=self.name, family=self.family, quant=q, device=self.device,
                    float_dtype=dtype, context=ctx, context_unit=unit, max_context=limit,
                    parts=tuple(parts), load_extra=extra, layout=self.layout,
                    notes=tuple(notes))


def plan(family: str, config, q: Quant, context: int | None = None, **kwargs) -> Plan:
    """The memory plan of `config` (a transformers config of `family`) under `q`; keyword
    arguments as Planner's."""
    return Planner(family, config, **kwargs).plan(q, context)


# --- plans of registry entries and folders ---------------------------------------------------


def planner_for_entry(entry_id: str, *, device: str = "cuda",
                      float_dtype: torch.dtype | None = None) -> Planner:
    """Plans of a registry entry, from its published architecture (published.py)."""
    from app.model import published

    pub = published.published(entry_id)
    return Planner(pub.family, published.config_for(entry_id), device=device,
                   float_dtype=float_dtype, name=entry_id, layout=pub.layout,
                   vocoder_files=published.vocoder_files(entry_id))


def plan_entry(entry_id: str, q: Quant, context: int | None = None, **kwargs) -> Plan:
    return planner_for_entry(entry_id, **kwargs).plan(q, context)


def folder_config(folder: Path) -> tuple[str, object, str]:
    """(family, transformers config, layout) of a checkpoint folder, from small files."""
    from app.model import families

    folder = Path(folder).expanduser()
    family = families.of_folder(folder)
    if family == "moshi":
        from app.model.moshi import loader

        layout = loader.detect_layout(folder)
        if layout == "moshi":
            return family, loader.moshi_layout_config_from_headers(folder), layout
    if family == "minicpm-o":
        from app.model.minicpm_o.config import MiniCPMOConfig

        return family, MiniCPMOConfig.from_folder(folder), "transformers"
    from transformers import AutoConfig

    try:
        return family, AutoConfig.from_pretrained(folder), "transformers"
    except (OSError, ValueError) as exc:
        raise BackendError(f"{folder}/config.json cannot be read ({exc})",
                           hint="download or copy the checkpoint again") from None


def planner_for_folder(folder: Path, *, device: str = "cuda",
                       float_dtype: torch.dtype | None = None,
                       talker_headroom: int | None = None) -> Planner:
    family, config, layout = folder_config(folder)
    vocoder = None
    if family == "minicpm-o":
        from app.model.minicpm_o.sizes import TOKEN2WAV_FILES

        assets = Path(folder).expanduser() / "assets" / "token2wav"
        vocoder = {name: ((assets / name).stat().st_size, gpu)
                   for name, (_, gpu) in TOKEN2WAV_FILES.items() if (assets / name).is_file()}
    return Planner(family, config, device=device, float_dtype=float_dtype, name=str(folder),
                   layout=layout, talker_headroom=talker_headroom, vocoder_files=vocoder or None)


# --- will it fit ----------------------------------------------------------------------------


def longest_context(planner: Planner, q: Quant, fits_in: int) -> int | None:
    """The longest context whose plan under `q` fits `fits_in` bytes; None when not even
    the family's shortest useful context fits."""
    lo, hi = min_context(planner.family), planner.max_context()
    if planner.plan(q, lo).total_bytes > fits_in:
        return None
    if planner.plan(q, hi).total_bytes <= fits_in:
        return hi
    while hi - lo > 16:
        mid = (lo + hi) // 2
        if planner.plan(q, mid).total_bytes <= fits_in:
            lo = mid
        else:
            hi = mid
    return lo


def alternatives(planner: Planner, current: Plan, free: int) -> list[str]:
    """What would fit `free` bytes instead of `current`: a shorter context at the same
    quantization, then each lower quantization at its longest context."""
    found: list[str] = []
    unit = current.context_unit
    ctx = longest_context(planner, current.quant, free)
    if ctx is not None and ctx < current.context:
        found.append(f"a context of {ctx} {unit} at {current.quant.value}")
    order = [Quant.BF16, Quant.INT8, Quant.NF4]
    lower = order[order.index(current.quant) + 1:] if current.quant in order else order[1:]
    for q in lower:
        ctx = longest_context(planner, q, free)
        if ctx is not None:
            found.append(f"{q.value} with up to {ctx} {unit} of context")
    return found


def size_text(n: int) -> str:
    """Bytes for people: GiB as GPUs are sold, MiB below one GiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB // 4 else f"{n / 2**20:.1f} MiB"


def refusal(planner: Planner, current: Plan, free: int, where: str) -> BackendError:
    """The error for a plan that does not fit `free` bytes, naming what would fit."""
    options = alternatives(planner, current, free)
    hint = ("try " + "; or ".join(options)) if options else (
        "nothing of this model fits there: pick a smaller model, or free memory on the GPU")
    return BackendError(
        f"{current.model} at {current.quant.value} with {current.context} "
        f"{current.context_unit} of context needs {size_text(current.total_bytes)} "
        f"(weights {size_text(current.weights_bytes)}, context "
        f"{size_text(current.total('context'))}, working {size_text(current.total('working'))}"
        f"; {size_text(current.load_bytes)} while loading) but {where} has "
        f"{size_text(free)} free; nothing was loaded",
        hint=hint)
