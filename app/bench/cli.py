"""`duetto bench NAME`: each benchmark prints its figures and exits non-zero on a miss."""

from __future__ import annotations

import argparse

from app.cli_dispatch import add_lazy_subcommands, load_subcommand

# Benchmark name -> (module with add_arguments/run, one line of help). Imported only
# when chosen.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "timeline": ("app.bench.timeline", "one simulated hour of mic audio and camera frames"),
    "backend": ("app.bench.backend", "Qwen2.5-Omni: prefill, first speech, speech RTF, memory"),
    "duplex": ("app.bench.duplex", "scripted conversations through the app, scored like FDB"),
    "turn": ("app.bench.turn", "the end-of-turn model alone: accuracy and compute per call"),
    "gpu": ("app.bench.gpu", "full-size random-weight models on CUDA: VRAM, compute, RTF"),
    "faults": ("app.bench.faults", "every fault as a scripted session: what was said, kept"),
    "soak": ("app.bench.soak", "a long session whose devices come and go: memory, recording"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_lazy_subcommands(parser, BENCHMARKS, dest="benchmark")


def run(args: argparse.Namespace) -> int:
    if args.benchmark is None:
        print("duetto bench: name a benchmark: " + ", ".join(BENCHMARKS))
        return 2
    module, bench_args = load_subcommand("duetto bench", args.benchmark, BENCHMARKS, args._rest)
    return int(module.run(bench_args) or 0)
