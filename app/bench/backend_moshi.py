"""`duetto bench backend` for the Moshi family: per-frame compute against the 80 ms clock.

Prints load time, persona prefix time (first run and from the voice cache), per-frame
compute (encode the user's 80 ms, one temporal + depth step, decode 80 ms) as median,
p99 and max, and peak memory; exits non-zero when a target is missed:

* real time: the median frame is computed in under 80 ms;
* the tiny model on a CPU: median under 40 ms (half the budget, leaving the other half
  to the rest of the app on the same cores).

`--model DIR` runs a checkpoint folder in either layout (`--family moshi --model tiny`
builds the tiny one in a temp dir). `--full-size 7B` builds the 7B architecture
(published.py: moshiko's, and PersonaPlex's once loaded) with random weights on a CUDA
GPU, through the loader's own path, in any quantization; without a GPU it refuses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.bench.backend import _peak_mb, measure_and_report

REAL_TIME_MS = 80.0
TINY_CPU_MS = 40.0


@dataclass
class MoshiFigures:
    device: str
    model: str
    load_s: float
    prefix_s: float
    prefix_frames: int
    cached_prefix_s: float
    frame_ms: list[float]
    peak_mb: float
    tiny: bool

    def percentile(self, p: float) -> float:
        return float(np.percentile(self.frame_ms, p))


def _full_size(args: argparse.Namespace):  # -> loader.Loaded
    import torch

    from app.model.contract import BackendError, Quant
    from app.model.moshi import loader

    if args.full_size != "7B":
        raise BackendError(f"--full-size {args.full_size}: the Moshi family has a 7B only",
                           hint="use --full-size 7B")
    if not torch.cuda.is_available():
        raise BackendError(
            "--full-size 7B builds the 7B Moshi/PersonaPlex architecture with random weights "
            "(about 17 GB in bf16, 5 GB in nf4) and needs a CUDA GPU; this machine has none",
            hint="run it on a GPU machine, or benchmark --family moshi --model tiny here",
        )
    return loader.load_random(Quant(args.quant), device="cuda")


def measure(args: argparse.Namespace) -> MoshiFigures:
    import torch

    from app.model.contract import BackendError, Control, ModelSource, Persona, Quant, Unit
    from app.model.moshi.backend import MoshiBackend
    from app.model.moshi.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        tiny = args.model == "tiny" and not args.full_size
        if tiny:
            build_tiny(Path(tmp) / "tiny", seed=args.seed)  # before the clock starts
        backend = MoshiBackend()
        t0 = time.perf_counter()
        if args.full_size:
            backend.attach(_full_size(args))
            name = f"random {args.full_size} ({args.quant})"
        else:
            if not args.model:
                raise BackendError(
                    "no model given",
                    hint="--model DIR, --family moshi --model tiny, or --full-size 7B")
            folder = Path(tmp) / "tiny" if tiny else Path(args.model)
            backend.load(ModelSource(local_dir=folder), Quant(args.quant), lambda *_: None)
            name = "tiny" if tiny else str(folder)
        device = str(backend.loaded.device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        load_s = time.perf_counter() - t0
        voice = sorted(backend.spec.voices)[:1]
        from app.model.contract import Voice

        persona = Persona("bench", "You enjoy a good conversation about technology.",
                          voice=Voice(builtin=voice[0]) if voice else Voice())
        backend.start(persona)
        prefix_s, prefix_frames = backend.timing.prefix_s, backend.timing.prefix_frames
        backend.start(persona)  # the same persona again: from the cache
        cached_s = backend.timing.prefix_s
        rng = np.random.default_rng(args.seed)
        frame_ms: list[float] = []
        for i in range(args.frames + 5):
            audio = (0.05 * rng.standard_normal(1920)).astype(np.float32)
            unit = Unit(i, i * 0.08, 0.08, 24000, audio)
            t = time.perf_counter()
            list(backend.step(unit, Control()))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= 5:  # the first frames warm up allocators and caches
                frame_ms.append((time.perf_counter() - t) * 1000)
        # A tiny folder passed as --model DIR says so in its duetto.json.
        tiny = tiny or bool(backend.loaded.meta.get("tiny"))
        figures = MoshiFigures(device=device, model=name, load_s=load_s, prefix_s=prefix_s,
                               prefix_frames=prefix_frames, cached_prefix_s=cached_s,
                               frame_ms=frame_ms, peak_mb=_peak_mb(device), tiny=tiny)
        backend.close()
        return figures


def verdicts(fig: MoshiFigures) -> dict[str, bool]:
    median = statistics.median(fig.frame_ms)
    ok = {f"median frame < {REAL_TIME_MS:.0f} ms (real time)": median < REAL_TIME_MS}
    if fig.tiny and fig.device == "cpu":
        ok[f"tiny on CPU: median frame < {TINY_CPU_MS:.0f} ms"] = median < TINY_CPU_MS
    return ok


def report(fig: MoshiFigures, ok: dict[str, bool]) -> str:
    import torch

    lines = [
        f"model                          {fig.model} (moshi family)",
        f"device                         {fig.device}, {torch.get_num_threads()} torch threads",
        f"load                           {fig.load_s:.2f} s",
        f"persona prefix                 {fig.prefix_s * 1000:.0f} ms for {fig.prefix_frames} "
        f"frames; again from the cache {fig.cached_prefix_s * 1000:.1f} ms",
        f"compute per 80 ms frame        median {statistics.median(fig.frame_ms):.1f} ms, "
        f"p99 {fig.percentile(99):.1f} ms, max {max(fig.frame_ms):.1f} ms "
        f"({len(fig.frame_ms)} frames)",
        f"peak memory                    {fig.peak_mb:.0f} MiB",
    ]
    lines += [f"target: {name:<38} {'yes' if v else 'NO'}" for name, v in ok.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        print("--frames must be at least 1", file=sys.stderr)
        return 2
    return measure_and_report(args, measure, verdicts, report)
