"""In-place bitsandbytes quantization of a model built from mapped weights.

transformers quantizes while `from_pretrained` loads; a moshi-layout checkpoint is
mapped in memory instead (layout.py), so its Linears are swapped for bitsandbytes'
layers here, the way `quant._cpu_probe` builds them. The weights are quantized when the
layer moves to its device.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from app.model import quant
from app.model.contract import Quant


def quantize_linears(root: torch.nn.Module, q: Quant, device: str,
                     skip: Iterable[str] = ()) -> int:
    """Replace every nn.Linear under `root` (but the `skip` names) by its 8-bit or NF4
    bitsandbytes counterpart on `device`; returns how many were replaced."""
    import bitsandbytes as bnb

    if q not in (Quant.INT8, Quant.NF4):
        return 0
    skipped = set(skip)
    targets = [(name, m) for name, m in root.named_modules()
               if isinstance(m, torch.nn.Linear) and name not in skipped]
    for name, dense in targets:
        if q is Quant.NF4:
            layer = bnb.nn.Linear4bit(dense.in_features, dense.out_features,
                                      bias=dense.bias is not None,
                                      compute_dtype=quant.compute_dtype(device), quant_type="nf4")
            layer.weight = bnb.nn.Params4bit(dense.weight.data.float().contiguous(),
                                             requires_grad=False, quant_type="nf4")
        else:
            layer = bnb.nn.Linear8bitLt(dense.in_features, dense.out_features,
                                        bias=dense.bias is not None, has_fp16_weights=False)
            layer.weight = bnb.nn.Int8Params(dense.weight.data.contiguous(), requires_grad=False)
        if dense.bias is not None:
            layer.bias = dense.bias
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, layer.to(device))
    return len(targets)
