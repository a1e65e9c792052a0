"""Building what the placement rule (placement.py) says, and measuring what was built.

`place(model, placement, device)` takes a model whose weights are anywhere (on the CPU,
memory-mapped from a checkpoint; or already on the GPU after transformers'
`from_pretrained`) and leaves every module where and how the rule wants it:

* Linears the rule quantizes and that are still in floating point become bitsandbytes
  layers on the device (nf4 or int8). Int8 is quantized in slices of rows, so the only
  extra memory on the device is one slice, never a second copy of the weight.
* Modules the rule keeps in system RAM (embeddings) move there, wrapped so that their
  output still lands on the device (`HostEmbedding`).
* Every other tensor moves to the device in its part's float dtype. A tensor that is a
  view into a larger one (a slice of a fused projection) is copied, so it owns exactly
  its own bytes and the larger tensor can be freed.

`allocated(model, placement)` adds up the bytes the built model really holds, per part
and per place (GPU or system RAM), counting every storage once: parameters, buffers,
bitsandbytes' quantization state and the host embeddings. Tests hold it against the
memory plan; the GPU benchmark holds the plan against the device's own counters.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
import torch.nn.functional as F

from app.model.placement import Decision, Placement, Store, buffer_dtype

log = logging.getLogger(__name__)

DEVICE = "device"  # where the model computes: the GPU (or the CPU on a CPU-only run)
HOST = "host"  # system RAM beside a GPU run
INT8_ROWS_PER_SLICE = 4096  # rows quantized at a time when converting to int8


class HostEmbedding(torch.nn.Module):
    """An embedding table kept in system RAM; lookups return rows on `device`.

    The table is neither a parameter nor a buffer, so moving or casting the model never
    brings it back to the GPU, and `next(model.parameters())` still names the device
    the model computes on. `weight` is there for code that reads the dtype or the shape.
    """

    def __init__(self, embedding: torch.nn.Embedding, device: torch.device | str,
                 dtype: torch.dtype, copy: bool = False) -> None:
        super().__init__()
        self.host_weight = _owned(embedding.weight.detach(), "cpu", dtype, copy_cpu=copy)
        self.padding_idx = embedding.padding_idx
        self.num_embeddings, self.embedding_dim = self.host_weight.shape
        self.device = torch.device(device)

    @property
    def weight(self) -> torch.Tensor:
        return self.host_weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids.to("cpu"), self.host_weight, self.padding_idx)
        return rows.to(self.device, non_blocking=True)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, in system RAM -> {self.device}"


def _bnb_types() -> tuple[type, ...]:
    try:
        import bitsandbytes as bnb
    except Exception:  # no bitsandbytes: nothing in the model can be one of its layers
        return ()
    return (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)


def _set_module(root: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _bias(dense: torch.nn.Linear, device, dtype) -> torch.nn.Parameter | None:
    if dense.bias is None:
        return None
    return torch.nn.Parameter(_owned(dense.bias.detach(), device, dtype), requires_grad=False)


def to_nf4(dense: torch.nn.Linear, device, float_dtype: torch.dtype) -> torch.nn.Module:
    """bitsandbytes' NF4 layer for `dense` on `device`, double-quantized block scales (as
    transformers' BitsAndBytesConfig(bnb_4bit_use_double_quant=True) builds it)."""
    import bitsandbytes as bnb

    from app.model import quant

    layer = bnb.nn.Linear4bit(dense.in_features, dense.out_features, bias=False,
                              compute_dtype=quant.compute_dtype(str(device)),
                              compress_statistics=True, quant_type="nf4", device="meta")
    weight = dense.weight.detach().to(dtype=float_dtype)
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True,
                                     quant_type="nf4").to(device)
    layer.bias = _bias(dense, device, float_dtype)
    return layer


def to_int8(dense: torch.nn.Linear, device, float_dtype: torch.dtype) -> torch.nn.Module:
    """bitsandbytes' LLM.int8 layer for `dense` on `device`, quantized a slice of rows at
    a time (row-wise absmax scales: slicing changes nothing in the result)."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import int8_vectorwise_quant

    weight = dense.weight.detach()
    rows, cols = weight.shape
    cb = torch.empty((rows, cols), dtype=torch.int8, device=device)
    scb = torch.empty(rows, dtype=torch.float32, device=device)
    for start in range(0, rows, INT8_ROWS_PER_SLICE):
        part = weight[start:start + INT8_ROWS_PER_SLICE].to(device=device, dtype=torch.float16)
        q, s, _ = int8_vectorwise_quant(part)
        cb[start:start + q.shape[0]] = q
        scb[start:start + q.shape[0]] = s
    layer = bnb.nn.Linear8bitLt(dense.in_features, dense.out_features, bias=False,
                                has_fp16_weights=False, device="meta")
    layer.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False,
                                     CB=cb, SCB=scb)
    layer.bias = _bias(dense, device, float_dtype)
    return layer


def _owned(t: torch.Tensor, device, dtype: torch.dtype | None, copy_cpu: bool = False
           ) -> torch.Tensor:
    """`t` on `device` (in `dtype` when it is a float), holding exactly its own bytes.
    `copy_cpu`: a tensor that stays on the CPU is copied (it may be a view of a
    memory-mapped file, which must not be what the model runs on)."""
    target = dtype if dtype is not None and t.is_floating_point() else t.dtype
    moved = t.to(device=device, dtype=target)
    if moved.untyped_storage().nbytes() != moved.numel() * moved.element_size() or (
            copy_cpu and moved.device.type == "cpu" and moved.data_ptr() == t.data_ptr()):
        moved = moved.clone()  # a view into a larger tensor (or a file): own the bytes
    return moved


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.device == b.device and a.dtype == b.dtype and a.data_ptr() == b.data_ptr()
            and a.untyped_storage().nbytes() == b.untyped_storage().nbytes())


def _place_tensors(module: torch.nn.Module, device, d: Decision, copy_cpu: bool) -> None:
    """This module's own parameters and buffers (not its children's) where `d` says."""
    for name, param in list(module.named_parameters(recurse=False)):
        if type(param) is not torch.nn.Parameter:
            continue  # bitsandbytes' own parameter types stay as they are
        new = _owned(param.detach(), device, d.dtype, copy_cpu)
        if not _same(new, param):
            setattr(module, name, torch.nn.Parameter(new, requires_grad=False))
    for name, buf in list(module.named_buffers(recurse=False)):
        if buf is None:
            continue
        new = _owned(buf, device, buffer_dtype(d, name, buf), copy_cpu)
        if not _same(new, buf):
            module._buffers[name] = new


def place(model: torch.nn.Module, placement: Placement, device: str | torch.device, *,
          from_file: bool = False) -> None:
    """Leave every module of `model` where and how `placement` says (module docstring).
    `from_file`: the model's tensors may be views of memory-mapped files; whatever stays
    on the CPU is copied into memory of its own."""
    device = torch.device(device)
    bnb_layers = _bnb_types()
    decisions = list(placement.decisions(model))
    host_roots = set(placement.host_modules(model))
    for name, module, d in decisions:
        if name in host_roots:
            if isinstance(module, torch.nn.Embedding):
                _set_module(model, name, HostEmbedding(module, device, d.dtype, from_file))
                continue
            if isinstance(module, torch.nn.ModuleList):
                for i, child in enumerate(module):
                    if isinstance(child, torch.nn.Embedding):
                        module[i] = HostEmbedding(child, device, d.dtype, from_file)
                continue
    host_prefixes = tuple(f"{n}." for n in host_roots)
    for name, module, d in decisions:
        if name in host_roots or name.startswith(host_prefixes):
            continue
        if isinstance(module, HostEmbedding) or (bnb_layers and isinstance(module, bnb_layers)):
            continue
        if isinstance(module, torch.nn.Linear) and d.store is not Store.FLOAT:
            convert = to_nf4 if d.store is Store.NF4 else to_int8
            _set_module(model, name, convert(module, device, d.dtype))
            continue
        _place_tensors(module, device, d, from_file)


# --- what was built ------------------------------------------------------------------------


def _tensors_of(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every tensor a module holds itself: parameters, buffers, quantization state."""
    found: list[torch.Tensor] = []
    for param in module.parameters(recurse=False):
        found.append(param)
        for attr in ("CB", "SCB"):
            extra = getattr(param, attr, None)
            if isinstance(extra, torch.Tensor):
                found.append(extra)
        state = getattr(param, "quant_state", None)
        while state is not None:
            found += [t for t in (state.absmax, state.code, getattr(state, "offset", None))
                      if isinstance(t, torch.Tensor)]
            state = getattr(state, "state2", None)
    found += [b for b in module.buffers(recurse=False) if b is not None]
    bnb_state = getattr(module, "state", None)
    for attr in ("CB", "SCB"):
        extra = getattr(bnb_state, attr, None)
        if isinstance(extra, torch.Tensor):
            found.append(extra)
    if isinstance(module, HostEmbedding):
        found.append(module.host_weight)
    return found


def allocated(model: torch.nn.Module, placement: Placement) -> dict[tuple[str, str], int]:
    """Bytes the model holds, by (part, DEVICE or HOST), each storage counted once.

    HOST: in system RAM beside a model that runs on a GPU. On a CPU-only run everything
    is on the device the model computes on, the CPU, and counts as DEVICE.
    """
    seen: set[tuple[str, int]] = set()
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for name, module in model.named_modules():
        rule = placement.rule(name)
        for t in _tensors_of(module):
            storage = t.untyped_storage()
            key = (str(t.device), storage.data_ptr())
            if key in seen or t.device.type == "meta":
                continue
            seen.add(key)
            where = HOST if (t.device.type == "cpu" and placement.gpu) else DEVICE
            totals[(rule.part, where)] += storage.nbytes()
    return dict(totals)
