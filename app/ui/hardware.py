"""What the machine offers for a model: the GPU (through torch.cuda) and each family's
voices. Importing torch takes seconds, so the window calls these off the main thread.

A machine with no NVIDIA driver at all is told apart without torch: importing torch and
asking CUDA took 5 s here with a warm disk cache and up to 30 s on a cold start, only to
say what the absence of the driver's files says in a millisecond.
"""

from __future__ import annotations

import ctypes.util
import functools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from app.model import families, registry
from app.model.contract import BackendSpec, Quant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_gib: float
    free_gib: float
    compute: str = ""


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[GpuInfo, ...]
    note: str  # why there is no GPU, or "" when there is one

    @property
    def best(self) -> GpuInfo | None:
        return max(self.gpus, key=lambda g: g.total_gib, default=None)


NO_GPU_NOTE = "no CUDA GPU found: models run on the CPU, far slower than real time"

# Where a GPU driver torch could use shows itself on Linux: NVIDIA's kernel module (also
# under WSL, whose GPU bridge is /dev/dxg) and AMD's ROCm, which torch.cuda also drives.
_LINUX_DRIVER_SIGNS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0",
                       "/dev/dxg", "/dev/kfd")


def no_driver_reason(platform: str = sys.platform,
                     signs: tuple[str, ...] = _LINUX_DRIVER_SIGNS) -> str | None:
    """Why there can be no CUDA GPU, decided in a millisecond without torch; None when a
    driver may be there (torch must then be asked)."""
    if platform == "darwin":
        return "no CUDA GPU on a Mac: models run on the CPU, far slower than real time"
    if platform.startswith("linux"):
        if any(Path(sign).exists() for sign in signs):
            return None
        return "no NVIDIA GPU driver on this machine: " + NO_GPU_NOTE.split(": ", 1)[1]
    if platform == "win32" and ctypes.util.find_library("nvcuda") is None:
        return "no NVIDIA GPU driver on this machine: " + NO_GPU_NOTE.split(": ", 1)[1]
    return None


def detect() -> Hardware:
    """The CUDA GPUs torch sees; never raises (a broken torch is a note). Without any GPU
    driver it answers at once, without importing torch."""
    quick = no_driver_reason()
    if quick is not None:
        return Hardware((), quick)
    try:
        import torch
    except Exception as exc:
        return Hardware((), f"torch cannot be imported ({exc})")
    try:
        if not torch.cuda.is_available():
            return Hardware((), NO_GPU_NOTE)
        gpus = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            gpus.append(GpuInfo(props.name, total / 2**30, free / 2**30,
                                f"{props.major}.{props.minor}"))
        return Hardware(tuple(gpus), "")
    except Exception as exc:  # a driver problem is something to show, not a crash
        return Hardware((), f"the GPU could not be queried ({exc})")


def vram_in_use_gib() -> float | None:
    """GPU memory torch holds now, or None without CUDA.

    Call only after `detect()` returned: torch is then fully imported and this is cheap
    (while another thread is still importing it, its module is half-built).
    """
    import sys

    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available():
            return None
        return torch.cuda.memory_reserved() / 2**30
    except Exception:  # a half-imported or broken torch: no figure rather than a crash
        return None


def family_spec(family: str) -> BackendSpec | None:
    """The family's spec before loading (its built-in voices); None if it cannot be built."""
    try:
        return families.backend_class(family)().spec
    except Exception:
        return None


@dataclass(frozen=True)
class Fit:
    """What the memory plan says of an entry on the GPU that was found.

    `needed_gib`: the plan at `context` (the longest context that fits when it fits; the
    shortest useful one when it does not; the family's default without a GPU).
    """

    needed_gib: float
    available_gib: float | None
    fits: bool | None  # None: no GPU to compare with
    context: int = 0
    unit: str = "tokens"
    default_context: int = 0

    def describe(self) -> str:
        if self.available_gib is None:
            return (f"needs about {self.needed_gib:.1f} GiB of GPU memory with a context of "
                    f"{self.context} {self.unit}")
        if self.fits:
            return (f"fits: {self.needed_gib:.1f} GiB with a context of {self.context} "
                    f"{self.unit}, the longest that fits your GPU's {self.available_gib:.1f} GiB")
        return (f"needs {self.needed_gib:.1f} GiB even with a context of {self.context} "
                f"{self.unit}; your GPU has {self.available_gib:.1f} GiB: does NOT fit")


# Kept aside on the card for the display and the CUDA context.
RESERVED_SHARE = 0.05


@functools.cache
def _planner(entry_id: str):  # -> memory_plan.Planner
    from app.model import memory_plan

    return memory_plan.planner_for_entry(entry_id)


def warm_plans() -> None:
    """Build the registry's plans once (a few seconds; call off the UI thread)."""
    for entry in registry.entries():
        if entry.supported:
            try:
                _planner(entry.id).plan(Quant.NF4)
            except Exception:  # a plan that cannot be made shows as unknown, not a crash
                log.warning("no memory plan for %s", entry.id, exc_info=True)


def fit(entry: registry.RegistryEntry, quant: Quant, hardware: Hardware | None) -> Fit:
    """The entry's plan against the best GPU found: the longest context that fits."""
    from app.model import memory_plan

    planner = _planner(entry.id)
    default = memory_plan.default_context(planner.family, planner.config)
    gpu = hardware.best if hardware else None
    if gpu is None:
        plan = planner.plan(quant)
        return Fit(plan.total_gib, None, None, plan.context, plan.context_unit, default)
    budget = int(gpu.total_gib * (1 - RESERVED_SHARE) * memory_plan.GIB)
    longest = memory_plan.longest_context(planner, quant, budget)
    if longest is None:
        plan = planner.plan(quant, memory_plan.min_context(planner.family))
        return Fit(plan.total_gib, gpu.total_gib, False, plan.context, plan.context_unit,
                   default)
    plan = planner.plan(quant, longest)
    return Fit(plan.total_gib, gpu.total_gib, True, plan.context, plan.context_unit, default)
