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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duetto",
        description="Live, full-duplex conversation with an omni model on your own GPU.",
    )
    add_lazy_subcommands(parser, SUBCOMMANDS, dest="command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        from app.ui.launch import launch

        return launch(args)
    module, sub_args = load_subcommand("duetto", args.command, SUBCOMMANDS, args._rest)
    return int(module.run(sub_args) or 0)


if __name__ == "__main__":
    sys.exit(main())
