"""The `duetto` command: the app by default, and the subcommands beside it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.cli_dispatch import add_lazy_subcommands, load_subcommand

# Subcommand name -> (module exposing `add_arguments(parser)` and `run(args) -> int`,
# one line of help). Imported only when chosen.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("app.doctor", "show what this machine offers and lacks for Duetto"),
    "bench": ("app.bench.cli", "run a benchmark and check its targets"),
    "models": ("app.model.cli", "list, download or build model checkpoints"),
    "serve": ("app.serve.cli", "serve a local model over the duplex WebSocket protocol"),
}

QUANTS = ("bf16", "fp16", "int8", "nf4")  # app.model.contract.Quant, without importing it
FAMILIES = ("minicpm-o", "moshi", "qwen2.5-omni")  # app.model.families.known(), likewise


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the window itself (this run only; Settings keeps the lasting choices)."""
    group = parser.add_argument_group("the app (options for this run only)")
    group.add_argument("--camera", metavar="INDEX|FILE",
                       help="a camera index or a video file replayed as the camera")
    group.add_argument("--mic", metavar="INDEX|NAME|FILE",
                       help="a microphone index or name, or an audio file replayed as the mic")
    group.add_argument("--speaker", metavar="INDEX|FILE.wav|null",
                       help="an output index, a .wav file to write, or null (play nowhere)")
    group.add_argument("--model", metavar="DIR",
                       help="a model folder; a tiny one from `duetto models tiny` is the "
                            "hardware self-check")
    group.add_argument("--family", choices=FAMILIES,
                       help="the model family of --model; by default read from the folder")
    group.add_argument("--quant", choices=QUANTS, help="how to hold the weights")
    group.add_argument("--device", choices=("auto", "cuda", "cpu"), help="where to run it")
    group.add_argument("--persona", metavar="ID", help="a persona id (file name without .json)")
    group.add_argument("--start", action="store_true",
                       help="start the conversation as soon as the window opens")
    group.add_argument("--quit-after", type=float, metavar="SECONDS",
                       help="close the window after this many seconds, as its close button "
                            "does (a scripted self-check that ends by itself, exit 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duetto",
        description="Live, full-duplex conversation with an omni model on your own GPU.",
    )
    add_app_arguments(parser)
    add_lazy_subcommands(parser, SUBCOMMANDS, dest="command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.malloc_arenas import cap_malloc_arenas
    from app.termination import exit_on_sigterm

    cap_malloc_arenas()  # first, before any thread: see app/malloc_arenas.py
    exit_on_sigterm()  # a SIGTERM finalizes open recordings instead of cutting them off
    args = build_parser().parse_args(argv)
    if args.command is None:
        from app.ui.launch import launch

        return launch(args)
    module, sub_args = load_subcommand("duetto", args.command, SUBCOMMANDS, args._rest)
    return int(module.run(sub_args) or 0)


if __name__ == "__main__":
    sys.exit(main())
