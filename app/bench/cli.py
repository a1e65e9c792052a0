"""`duetto bench NAME`: each benchmark prints its figures and exits non-zero on a miss."""

from __future__ import annotations

import argparse
import importlib

# Benchmark name -> (module with add_arguments/run, one-line description).
BENCHMARKS: dict[str, tuple[str, str]] = {
    "timeline": ("app.bench.timeline", "one simulated hour of mic audio and camera frames"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        bench_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(bench_parser)
        bench_parser.set_defaults(_bench=module)


def run(args: argparse.Namespace) -> int:
    return int(args._bench.run(args) or 0)
