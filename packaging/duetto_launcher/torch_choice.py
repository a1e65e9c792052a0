"""Which build of torch this machine gets, and why, said in words the user can check.

* An NVIDIA GPU (nvidia-smi answers): the newest CUDA build of torch that the driver can
  run. The driver's "CUDA Version" is the newest CUDA runtime it supports; a build made
  for a newer runtime would not load, so the choice is the newest build at or below it.
  A driver older than every CUDA build gets the CPU build and is told to update.
* A Mac with Apple Silicon: PyPI's macOS arm64 build, which uses the GPU through Metal.
* Anything else: the CPU build.

DUETTO_TORCH=cpu|cu126|… overrides the choice (and says so). Only builds the installer
carries a lock for can be chosen; the launcher passes that list in.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# A command runner: the command's stdout, or None when it is missing or fails. Tests pass
# a fake that returns nvidia-smi's text.
Runner = Callable[[Sequence[str]], "str | None"]

_CUDA_VERSION = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")
_BUILD = re.compile(r"cu(\d+)(\d)$")  # cu128 -> CUDA 12.8, cu130 -> 13.0


@dataclass(frozen=True)
class TorchChoice:
    build: str  # "cpu", "cu128", "mps", ...: the key of the lock the installer carries
    reason: str  # one sentence for the user

    @property
    def label(self) -> str:
        if self.build == "cpu":
            return "CPU"
        if self.build == "mps":
            return "Apple Silicon (Metal)"
        major, minor = cuda_of(self.build)
        return f"CUDA {major}.{minor}"


def cuda_of(build: str) -> tuple[int, int]:
    match = _BUILD.match(build)
    if not match:
        raise ValueError(f"not a CUDA build name: {build}")
    return int(match.group(1)), int(match.group(2))


def run_command(command: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass(frozen=True)
class NvidiaDriver:
    gpus: list[str]
    cuda: tuple[int, int]


def read_nvidia(run: Runner) -> NvidiaDriver | None:
    """The GPUs and the driver's CUDA version, from nvidia-smi; None without one."""
    header = run(["nvidia-smi"])
    if not header:
        return None
    match = _CUDA_VERSION.search(header)
    if not match:
        return None
    names = run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]) or ""
    gpus = [line.strip() for line in names.splitlines() if line.strip()]
    return NvidiaDriver(gpus or ["an NVIDIA GPU"], (int(match.group(1)), int(match.group(2))))


def choose(available: Sequence[str], *, system: str | None = None,
           machine: str | None = None, run: Runner = run_command,
           override: str | None = None) -> TorchChoice:
    """The build for this machine among `available` (the locks the installer carries)."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    override = override if override is not None else os.environ.get("DUETTO_TORCH")
    if override:
        if override not in available:
            raise ValueError(f"DUETTO_TORCH={override} is not a build this installer carries "
                             f"({', '.join(sorted(available))})")
        return TorchChoice(override, f"DUETTO_TORCH asks for the {override} build.")
    if system == "Darwin":
        if machine in ("arm64", "aarch64") and "mps" in available:
            return TorchChoice("mps", "This Mac has Apple Silicon: torch uses its GPU "
                                      "through Metal.")
        return _cpu(available, "This Mac has no Apple Silicon GPU that torch can use.")
    driver = read_nvidia(run)
    if driver is None:
        return _cpu(available, "No NVIDIA GPU was found (nvidia-smi did not answer).")
    gpus = ", ".join(driver.gpus)
    have = f"{driver.cuda[0]}.{driver.cuda[1]}"
    fitting = sorted((cuda_of(b), b) for b in available
                     if _BUILD.match(b) and cuda_of(b) <= driver.cuda)
    if fitting:
        build = fitting[-1][1]
        return TorchChoice(build, f"{gpus} with a driver for CUDA {have}: the newest torch "
                                  f"build it runs is {TorchChoice(build, '').label}.")
    cuda_builds = sorted(cuda_of(b) for b in available if _BUILD.match(b))
    if not cuda_builds:
        return _cpu(available, f"{gpus} found, but this installer carries no CUDA build of "
                               "torch.")
    oldest = f"{cuda_builds[0][0]}.{cuda_builds[0][1]}"
    return _cpu(available, f"{gpus} has a driver for CUDA {have}, older than the oldest "
                           f"CUDA build of torch (CUDA {oldest}): update the NVIDIA driver "
                           "and choose Repair to use the GPU.")


def _cpu(available: Sequence[str], why: str) -> TorchChoice:
    if "cpu" not in available:
        raise ValueError(f"{why} This installer carries no CPU build of torch.")
    return TorchChoice("cpu", f"{why} Models run on the CPU, far slower than real time.")
