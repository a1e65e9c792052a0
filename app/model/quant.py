"""Quantization: which dtype and which bitsandbytes settings a Quant means on a device.

Backends call these before `from_pretrained`: `quant_support` to refuse early with a
reason the user can act on, `unquantizable_linears` to keep layers bitsandbytes cannot
take out of quantization, `bnb_config` for the quantization config and `torch_dtype`
for everything left in floating point.

What bitsandbytes 0.50 can do was checked on its own code and by running it:
- CUDA: NF4 needs compute capability 6.0+, LLM.int8 7.5+.
- CPU: both run. On CPUs with AVX512-BF16 the first 4-bit forward repacks the weight
  for a fused kernel (`_convert_weight_packed_for_cpu`) in blocks of 32 output rows and
  reshapes the per-block scales by the 64-element quantization block, so every
  quantized Linear needs out_features % 32 == 0 and in_features % 64 == 0; other shapes
  fail with an AssertionError or a reshape RuntimeError at the first forward. That path
  is taken in inference only (eval mode, input without grad), so a forward with grad
  enabled can pass where real use fails: test under torch.no_grad().
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from app.model.contract import Quant

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig

log = logging.getLogger(__name__)

# bitsandbytes' hardware floors on CUDA (its README).
NF4_MIN_CAPABILITY = (6, 0)
INT8_MIN_CAPABILITY = (7, 5)

# Shape rules of bitsandbytes' fused 4-bit CPU kernel (AVX512-BF16 machines only).
CPU_4BIT_IN_MULTIPLE = 64  # the default 4-bit quantization block on CPU
CPU_4BIT_OUT_MULTIPLE = 32  # block_n of the packed weight layout

_QUANTIZED = (Quant.INT8, Quant.NF4)


def _device_type(device: str) -> str:
    """'cuda:1' -> 'cuda'; raises ValueError with the bad string for nonsense."""
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda[:N]'") from exc


def _cuda_index(device: str) -> int:
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


def _cuda_bf16(device: str) -> bool:
    if not torch.cuda.is_available():
        return False
    # bf16 arithmetic is native from Ampere (8.0); earlier cards emulate it slowly or not
    # at all, so ask the capability rather than torch.cuda.is_bf16_supported(), which
    # answers True on some older cards through emulation.
    major, _ = torch.cuda.get_device_capability(_cuda_index(device))
    return major >= 8


def torch_dtype(quant: Quant, device: str) -> torch.dtype:
    """The floating-point dtype for weights bitsandbytes does not hold, and for compute.

    CUDA: bfloat16 where the card does bf16 natively (compute capability 8.0+), else
    float16, whatever the quant (an FP16 request stays float16).
    CPU (and anything else that is not CUDA): float32. CPU runs are tests, tiny models
    and the hardware self-check; float16 lacks kernels for many CPU ops and bfloat16
    costs precision that makes tiny-model results drift from their references, while
    float32 memory does not matter at that size.
    """
    kind = _device_type(device)
    if kind == "cuda":
        if quant is Quant.FP16:
            return torch.float16
        return torch.bfloat16 if _cuda_bf16(device) else torch.float16
    return torch.float32


def compute_dtype(device: str) -> torch.dtype:
    """The dtype bitsandbytes computes 4-bit matmuls in on `device`.

    On CPU bfloat16: the fused 4-bit CPU kernel only computes in bf16 and casts to it
    anyway, so asking for it avoids a cast per call.
    """
    if _device_type(device) == "cuda":
        return torch.bfloat16 if _cuda_bf16(device) else torch.float16
    return torch.bfloat16


def bnb_config(
    quant: Quant, skip_modules: Sequence[str], *, device: str | None = None,
    cpu_offload: bool = False,
) -> BitsAndBytesConfig | None:
    """transformers' BitsAndBytesConfig for `quant`, or None for BF16/FP16.

    `skip_modules` are module names kept in floating point (transformers matches each as
    a regex prefix or a suffix of a module's dotted name). A non-empty list replaces
    transformers' default skips (the output head, e.g. `lm_head`): include those yourself.
    An empty list keeps the defaults. `device` picks the 4-bit compute dtype; by default
    the first CUDA device when there is one, else the CPU. `cpu_offload`: the device map
    puts some modules on the CPU (they are then left unquantized).
    """
    if quant not in _QUANTIZED:
        return None
    from transformers import BitsAndBytesConfig

    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    skip = list(dict.fromkeys(skip_modules)) or None  # keep order, drop repeats
    if quant is Quant.NF4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(target),
            llm_int8_skip_modules=skip,
            llm_int8_enable_fp32_cpu_offload=cpu_offload,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip,
                              llm_int8_enable_fp32_cpu_offload=cpu_offload)


@functools.cache
def _bnb_import_error() -> str:
    """Empty when bitsandbytes imports, else why not (cached: importing it is slow)."""
    try:
        importlib.import_module("bitsandbytes")
    except Exception as exc:  # a broken native library raises anything at import
        return f"bitsandbytes does not import here ({type(exc).__name__}: {exc})"
    return ""


@functools.cache
def cpu_has_avx512_bf16() -> bool:
    """Whether bitsandbytes takes its fused (shape-restricted) 4-bit CPU path here."""
    if _bnb_import_error():
        return False
    try:
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:  # an older release without the fused path: no restriction
        return False
    return bool(has_avx512bf16())


@functools.cache
def _cpu_probe(quant: Quant) -> str:
    """Quantize and run one small Linear on the CPU; empty on success, else the error.

    Asking bitsandbytes to do the work is the only honest answer to "does it run here":
    its CPU support depends on the release and on the native library that was built.
    """
    import bitsandbytes as bnb

    torch.manual_seed(0)
    dense = torch.nn.Linear(CPU_4BIT_IN_MULTIPLE, CPU_4BIT_OUT_MULTIPLE)
    try:
        if quant is Quant.NF4:
            layer = bnb.nn.Linear4bit(
                dense.in_features,
                dense.out_features,
                compute_dtype=torch.bfloat16,
                quant_type="nf4",
            )
            layer.weight = bnb.nn.Params4bit(
                dense.weight.data, requires_grad=False, quant_type="nf4"
            )
        else:
            layer = bnb.nn.Linear8bitLt(
                dense.in_features, dense.out_features, has_fp16_weights=False
            )
            layer.weight = bnb.nn.Int8Params(dense.weight.data, requires_grad=False)
        layer.bias = dense.bias
        layer = layer.to("cpu").eval()
        with torch.no_grad():
            out = layer(torch.randn(2, dense.in_features))
        if out.shape != (2, dense.out_features) or not torch.isfinite(out).all():
            return "bitsandbytes' CPU kernel gave a wrong or non-finite result"
    except Exception as exc:  # any failure inside bitsandbytes means "not here"
        log.debug("bitsandbytes CPU probe for %s failed", quant, exc_info=True)
        return f"bitsandbytes failed a {quant.value} test on the CPU ({type(exc).__name__}: {exc})"
    return ""


def quant_support(quant: Quant, device: str) -> tuple[bool, str]:
    """Whether `quant` can run on `device` here, and why not.

    The second element is the reason when the answer is no; when it is yes it may hold a
    note on limits (the CPU 4-bit shape rule), or be empty.
    """
    try:
        kind = _device_type(device)
    except ValueError as exc:
        return False, str(exc)
    if quant not in _QUANTIZED:
        if kind == "cuda" and not torch.cuda.is_available():
            return False, "no CUDA device is visible to torch"
        if kind == "cuda" and quant is Quant.BF16 and not _cuda_bf16(device):
            return True, "this GPU has no native bf16; weights will be held in fp16"
        return True, ""
    if err := _bnb_import_error():
        return False, err
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible to torch"
        cap = torch.cuda.get_device_capability(_cuda_index(device))
        need = NF4_MIN_CAPABILITY if quant is Quant.NF4 else INT8_MIN_CAPABILITY
        if cap < need:
            name = torch.cuda.get_device_name(_cuda_index(device))
            return False, (
                f"{quant.value} needs a GPU of compute capability {need[0]}.{need[1]} or newer; "
                f"{name} is {cap[0]}.{cap[1]}"
            )
        return True, ""
    if kind != "cpu":
        return False, f"bitsandbytes does not quantize on {kind!r} devices here; use bf16/fp16"
    if err := _cpu_probe(quant):
        return False, err
    if quant is Quant.NF4 and cpu_has_avx512_bf16():
        return True, (
            f"this CPU's 4-bit path quantizes only Linear layers with in_features % "
            f"{CPU_4BIT_IN_MULTIPLE} == 0 and out_features % {CPU_4BIT_OUT_MULTIPLE} == 0; "
            "others stay unquantized"
        )
    return True, ""


def _cpu_4bit_takes(layer: torch.nn.Linear) -> bool:
    return (
        layer.in_features % CPU_4BIT_IN_MULTIPLE == 0
        and layer.out_features % CPU_4BIT_OUT_MULTIPLE == 0
    )


def unquantizable_linears(
    model: torch.nn.Module, quant: Quant, *, device: str | None = None
) -> list[str]:
    """Names of nn.Linear modules whose shapes bitsandbytes cannot quantize on `device`.

    The backend adds them to `skip_modules`. Only NF4 on an AVX512-BF16 CPU restricts
    shapes today; every other combination returns []. `device` defaults to CUDA when
    torch sees one, else the CPU (the model itself may still be on the meta device).
    """
    if quant is not Quant.NF4:
        return []
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if _device_type(target) != "cpu" or not cpu_has_avx512_bf16():
        return []
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not _cpu_4bit_takes(module)
    ]
