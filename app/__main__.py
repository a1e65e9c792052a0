"""The `duetto` command: the app by default, and the subcommands beside it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand name -> module exposing `add_arguments(parser)` and `run(args) -> int`.
# Imported lazily so that `duetto doctor` does not pay for torch or Qt unless asked.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("app.doctor", "show what this machine offers and lacks for Duetto"),
    "bench": ("app.bench.cli", "run a benchmark and check its targets"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duetto",
        description="Live, full-duplex conversation with an omni model on your own GPU.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from app.ui.launch import launch

        return launch(args)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
