"""The one rule for where each part of a model lives and how its weights are held.

For a family, a quantization and a device, `Placement` decides for every module:
which part of the app it belongs to (thinker, vision encoder, vocoder...), whether its
Linear weights are quantized (nf4 or int8) or kept in floating point, which float dtype
the rest uses, and whether the weights stay in system RAM instead of the GPU (the input
embeddings: a lookup of a few rows per step needs no GPU). The loaders build exactly
what it says and the memory plan (memory_plan.py) counts exactly what it says: neither
has its own list.

What each choice costs is written beside its rule and in the README ("Memory").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from app.model.contract import BackendError, Quant


class Store(enum.StrEnum):
    """How one module's Linear weight is held."""

    FLOAT = "float"  # the part's float dtype
    NF4 = "nf4"  # bitsandbytes 4-bit NormalFloat, double-quantized block scales
    INT8 = "int8"  # bitsandbytes LLM.int8: int8 rows plus one fp32 scale per row


class Linears(enum.StrEnum):
    """What a part's rule asks of its Linear layers."""

    QUANT = "quant"  # the chosen quantization (nf4/int8), float under bf16/fp16
    INT8 = "int8"  # int8 whenever the model is quantized at all (output heads)
    FLOAT = "float"  # never quantized


@dataclass(frozen=True)
class PartRule:
    """Modules under any of `prefixes` (dotted module names) belong to `part`.

    `host`: the weights stay in system RAM when the model runs on a GPU (embeddings,
    looked up a few rows per step). `dtype`: a float dtype this part keeps whatever the
    model's (Mimi: float32), else None for the model's own. `whole`: the part is cast as
    a whole, float buffers too (a vocoder's filters must match its weights' dtype);
    otherwise buffers keep the dtype the model gave them (rotary frequencies in float32).
    `fp16_dtype`: the dtype instead of the model's when that is float16 (a card without
    bf16), for a part whose values may overflow float16's range.
    """

    part: str
    prefixes: tuple[str, ...]
    linears: Linears = Linears.QUANT
    host: bool = False
    dtype: torch.dtype | None = None
    whole: bool = False
    fp16_dtype: torch.dtype | None = None
    why: str = ""

    def matches(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)


# --- the families' rules -----------------------------------------------------------------
# First match wins. Names are transformers' module names (5.x); moshi-layout checkpoints
# are renamed into them before loading (moshi/layout.py).

QWEN_RULES: tuple[PartRule, ...] = (
    PartRule("thinker embeddings", ("thinker.model.language_model.embed_tokens",),
             Linears.FLOAT, host=True,
             why="152k rows, a few read per step: 1.02 GiB (7B) of GPU memory saved"),
    PartRule("thinker head", ("thinker.lm_head",),
             why="quantized like the thinker: in int8 the 7B would need 0.24 GiB more and "
                 "not fit 8 GiB with a 16k context"),
    PartRule("thinker", ("thinker.model.language_model",)),
    PartRule("audio encoder", ("thinker.model.audio_tower",)),
    PartRule("vision encoder", ("thinker.model.visual",)),
    PartRule("talker embeddings", ("talker.model.embed_tokens",), Linears.FLOAT, host=True,
             why="one code's row per step: 56 MiB (7B) of GPU memory saved"),
    PartRule("talker", ("talker.codec_head", "talker.thinker_to_talker_proj"), Linears.FLOAT,
             why="the code head and the projection are small and decide every code"),
    PartRule("talker", ("talker",)),
    PartRule("vocoder", ("token2wav",), Linears.FLOAT, whole=True, fp16_dtype=torch.float32,
             why="flow-matching DiT and BigVGAN in bf16 on a GPU (half of float32, 0.84 GiB "
                 "saved); the ODE's state stays float32 (voice.py); float32 on a card "
                 "without bf16, as float16's range is too narrow for it"),
    PartRule("thinker", ("thinker",)),
)

MOSHI_RULES: tuple[PartRule, ...] = (
    PartRule("embeddings", ("decoder.model.embed_tokens", "embed_tokens"), Linears.FLOAT,
             host=True, why="17 lookups of one row per frame: 0.53 GB of GPU memory saved"),
    PartRule("text head", ("decoder.lm_head",), Linears.INT8,
             why="int8 at half its bf16 memory"),
    PartRule("temporal transformer", ("decoder",)),
    PartRule("depth transformer", ("depth_decoder",), Linears.FLOAT,
             why="its per-codebook weights are stacked tensors, not Linears"),
    PartRule("codec (Mimi)", ("audio_encoder",), Linears.FLOAT, dtype=torch.float32, whole=True,
             why="the codec decides the sound; float32 as Kyutai runs it"),
)

MINICPMO_RULES: tuple[PartRule, ...] = (
    PartRule("llm embeddings", ("llm.model.embed_tokens",), Linears.FLOAT, host=True,
             why="152k rows, a few read per step: 1.24 GB (bf16) of GPU memory saved"),
    PartRule("llm head", ("llm.lm_head",)),
    PartRule("llm", ("llm",)),
    PartRule("vision encoder", ("vpm",)),
    PartRule("resampler", ("resampler",), Linears.FLOAT,
             why="nn.MultiheadAttention reads its projections' weights directly, so they "
                 "cannot be bitsandbytes layers"),
    PartRule("audio encoder", ("apm", "audio_projection_layer")),
    PartRule("speech decoder embeddings", ("tts.emb_text", "tts.emb_code",
                                           "tts.model.embed_tokens"), Linears.FLOAT, host=True,
             why="a row or two per step: 0.25 GB (bf16) of GPU memory saved"),
    PartRule("speech decoder", ("tts.head_code",), Linears.FLOAT,
             why="weight-normalised (a parametrization bitsandbytes cannot hold)"),
    PartRule("speech decoder", ("tts",)),
)

RULES: dict[str, tuple[PartRule, ...]] = {"qwen2.5-omni": QWEN_RULES, "moshi": MOSHI_RULES,
                                          "minicpm-o": MINICPMO_RULES}
OTHER = PartRule("other", ("",), Linears.FLOAT)


def rules_for(family: str) -> tuple[PartRule, ...]:
    try:
        return RULES[family]
    except KeyError:
        raise BackendError(f"no memory rule for the model family {family!r}",
                           hint=f"families with a backend: {', '.join(sorted(RULES))}") from None


def rule_dtype(rule: PartRule, float_dtype: torch.dtype) -> torch.dtype:
    """The float dtype a part ends in when the model's is `float_dtype`."""
    dtype = rule.dtype or float_dtype
    if dtype is torch.float16 and rule.fp16_dtype is not None:
        return rule.fp16_dtype
    return dtype


def float_prefixes(family: str) -> tuple[str, ...]:
    """Module prefixes whose Linears the rule never quantizes (embeddings aside)."""
    return tuple(p for r in rules_for(family) if r.linears is Linears.FLOAT and not r.host
                 for p in r.prefixes)


def _is_gpu(device: str) -> bool:
    return torch.device(device).type != "cpu"


# Buffers that keep their own dtype even in a part cast as a whole: rotary frequencies,
# which every forward reads in float32 (rounding them to 16 bits would shift the angles).
KEEP_DTYPE_BUFFERS = ("inv_freq", "original_inv_freq")


def buffer_dtype(d: Decision, name: str, buf: torch.Tensor) -> torch.dtype:
    """The dtype a buffer ends in under decision `d` (its own unless the part is cast as a
    whole and it is a float buffer that may follow)."""
    if d.buffer_dtype is None or not buf.is_floating_point() or name in KEEP_DTYPE_BUFFERS:
        return buf.dtype
    return d.buffer_dtype


@dataclass(frozen=True)
class Decision:
    """What the rule says of one module."""

    part: str
    store: Store  # for a Linear's weight; FLOAT for every other module
    dtype: torch.dtype  # float parameters of this module (bias, norms, non-Linear weights)
    buffer_dtype: torch.dtype | None  # float buffers: cast to this, or None to keep theirs
    host: bool


class Placement:
    """The rule applied to one family, quantization and device.

    `float_dtype`: the dtype of everything left in floating point (quant.torch_dtype's
    answer for the device; a plan for a card not at hand passes it). `unquantizable`:
    Linear names bitsandbytes cannot take on this device (quant.unquantizable_linears),
    kept in floating point.
    """

    def __init__(self, family: str, q: Quant, device: str, float_dtype: torch.dtype,
                 unquantizable: Iterable[str] = ()) -> None:
        self.family = family
        self.quant = q
        self.device = device
        self.float_dtype = float_dtype
        self.rules = rules_for(family)
        self.unquantizable = frozenset(unquantizable)
        self.gpu = _is_gpu(device)
        self._rules: dict[str, PartRule] = {}

    @classmethod
    def for_device(cls, family: str, q: Quant, device: str, skeleton: torch.nn.Module | None = None
                   ) -> Placement:
        """The placement on a real `device` of this machine (the loaders' entry point)."""
        from app.model import quant

        unquantizable = quant.unquantizable_linears(skeleton, q, device=device) \
            if skeleton is not None else []
        return cls(family, q, device, quant.torch_dtype(q, device), unquantizable)

    def rule(self, name: str) -> PartRule:
        found = self._rules.get(name)
        if found is None:
            found = self._rules[name] = next((r for r in self.rules if r.matches(name)), OTHER)
        return found

    def part(self, name: str) -> str:
        return self.rule(name).part

    def _store(self, rule: PartRule, name: str) -> Store:
        quantized = self.quant in (Quant.NF4, Quant.INT8)
        if not quantized or rule.linears is Linears.FLOAT or name in self.unquantizable:
            return Store.FLOAT
        if rule.linears is Linears.INT8:
            return Store.INT8
        return Store.NF4 if self.quant is Quant.NF4 else Store.INT8

    def decide(self, name: str, module: torch.nn.Module) -> Decision:
        rule = self.rule(name)
        is_linear = isinstance(module, torch.nn.Linear)
        store = self._store(rule, name) if is_linear else Store.FLOAT
        dtype = rule_dtype(rule, self.float_dtype)
        return Decision(part=rule.part, store=store, dtype=dtype,
                        buffer_dtype=dtype if rule.whole else None, host=rule.host and self.gpu)

    def decisions(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module, Decision]]:
        for name, module in model.named_modules():
            yield name, module, self.decide(name, module)

    # --- what the loaders ask ----------------------------------------------------------

    def load_store(self) -> Store:
        """What bitsandbytes does while transformers loads: the quant's own store."""
        return {Quant.NF4: Store.NF4, Quant.INT8: Store.INT8}.get(self.quant, Store.FLOAT)

    def skip_modules(self, model: torch.nn.Module) -> list[str]:
        """Linear names bitsandbytes must leave alone while loading (`llm_int8_skip_modules`):
        every Linear whose store is not the quant's own. Those the rule wants in int8 under
        nf4 are converted after loading (`after_load_int8`)."""
        own = self.load_store()
        return [name for name, module, d in self.decisions(model)
                if isinstance(module, torch.nn.Linear) and d.store is not own]

    def after_load_int8(self, model: torch.nn.Module) -> list[str]:
        """Linears to convert to int8 once loaded (loaded in float because the model's own
        quantization is nf4, and one from_pretrained applies one quantization)."""
        if self.load_store() is Store.INT8:
            return []
        return [name for name, module, d in self.decisions(model)
                if isinstance(module, torch.nn.Linear) and d.store is Store.INT8]

    def host_modules(self, model: torch.nn.Module) -> list[str]:
        """Top-most modules whose weights stay in system RAM (none on a CPU run)."""
        found: list[str] = []
        for name, _module, d in self.decisions(model):
            if d.host and not any(name.startswith(f + ".") for f in found):
                found.append(name)
        return [name for name in found if name]

