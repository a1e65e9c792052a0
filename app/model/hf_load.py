"""transformers' from_pretrained, told by the placement rule what to quantize and where.

One call serves a checkpoint folder and, for the GPU benchmark, weights made on the fly
(`state_dict` of lazy random tensors): the same quantization config, device map and
finishing steps either way, so what is measured is what users load.

* bitsandbytes quantizes, while loading, every Linear the rule gives the model's own
  quantization; the others are named in `llm_int8_skip_modules`.
* Modules that end in system RAM (embeddings) or in int8 under an nf4 model (output
  heads) are loaded on the CPU (`device_map`), so they never transit the GPU. accelerate
  hooks those modules to move their weights at every call; the hooks are removed at once
  (which puts the weights back on the CPU), and `place()` then makes them what the rule
  says.
* Parts the rule keeps in float32 are loaded in float32 from the file, never through
  the model's 16-bit dtype.
"""

from __future__ import annotations

import re

import torch

from app.model import quant
from app.model.building import building
from app.model.place import place
from app.model.placement import Placement, rule_dtype


def skip_patterns(placement: Placement, model: torch.nn.Module) -> list[str]:
    """`llm_int8_skip_modules` for this placement: escaped module names (transformers
    reads each as a regex up to a module boundary), whole parts where a part's every
    Linear is skipped, so the list stays short."""
    skipped = set(placement.skip_modules(model))
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    patterns: list[str] = []
    covered: set[str] = set()
    for rule in placement.rules:
        for prefix in rule.prefixes:
            under = [n for n in linears if n == prefix or n.startswith(prefix + ".")]
            if under and all(n in skipped for n in under) and not set(under) <= covered:
                patterns.append(prefix)
                covered.update(under)
    patterns += sorted(skipped - covered)
    return [re.escape(p) for p in patterns]


def cpu_modules(placement: Placement, model: torch.nn.Module) -> list[str]:
    """Modules to load on the CPU on a GPU run: host parts and int8-after-load heads."""
    if not placement.gpu:
        return []
    return [*placement.host_modules(model), *placement.after_load_int8(model)]


def loading_class(cls: type, rules, float_dtype: torch.dtype) -> type:
    """`cls`, told to load the rules' float32 parts in float32 (transformers' own
    `_keep_in_fp32_modules_strict`), so they are never rounded through 16 bits."""
    keep = [p for r in rules if rule_dtype(r, float_dtype) is torch.float32 for p in r.prefixes]
    if not keep or float_dtype is torch.float32:
        return cls
    return type(cls.__name__, (cls,), {"_keep_in_fp32_modules_strict": keep,
                                      "__module__": cls.__module__})


def from_pretrained(cls: type, placement: Placement, skeleton: torch.nn.Module, *,
                    folder=None, config=None, state_dict=None) -> torch.nn.Module:
    """Load `cls` from `folder` (or from `config` + `state_dict`) as `placement` says;
    the result is placed (place.py) and in eval mode."""
    device = placement.device
    on_cpu = cpu_modules(placement, skeleton)
    device_map: dict[str, str] = {"": device, **dict.fromkeys(on_cpu, "cpu")}
    kwargs: dict = {"dtype": placement.float_dtype, "device_map": device_map}
    bnb = quant.bnb_config(placement.quant, skip_patterns(placement, skeleton), device=device,
                           cpu_offload=bool(on_cpu))
    if bnb is not None:
        kwargs["quantization_config"] = bnb
    loading = loading_class(cls, placement.rules, placement.float_dtype)
    with building():  # from_pretrained sets torch's default dtype while it builds
        if state_dict is None:
            model = loading.from_pretrained(folder, **kwargs)
        else:
            # The family's own from_pretrained may read more files from a folder (Qwen's
            # speakers); weights from memory go through transformers' base loader.
            model = super(cls, loading).from_pretrained(None, config=config,
                                                        state_dict=state_dict, **kwargs)
    if on_cpu:
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(model, recurse=True)
    place(model, placement, device)
    return model.eval()
