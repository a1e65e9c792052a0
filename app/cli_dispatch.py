"""Subcommands that import their module only when chosen.

A subcommand's module may pull in torch or Qt; importing them all to build one parser
would make `duetto doctor` slow and would let one broken module break every command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType


def add_lazy_subcommands(
    parser: argparse.ArgumentParser, table: dict[str, tuple[str, str]], dest: str
) -> None:
    """List the subcommands in --help; their own arguments are parsed after choosing."""
    lines = [f"  {name:<12} {help_text}" for name, (_, help_text) in table.items()]
    parser.epilog = "commands:\n" + "\n".join(lines)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(dest, nargs="?", choices=list(table), metavar=dest.upper())
    parser.add_argument("_rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def load_subcommand(
    prog: str, name: str, table: dict[str, tuple[str, str]], rest: Sequence[str]
) -> tuple[ModuleType, argparse.Namespace]:
    """Import the chosen subcommand's module and parse its arguments."""
    module_name, help_text = table[name]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # say which part of the install is broken, then stop
        print(f"{prog} {name}: cannot start ({type(exc).__name__}: {exc})", file=sys.stderr)
        raise SystemExit(2) from exc
    sub_parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=help_text)
    module.add_arguments(sub_parser)
    return module, sub_parser.parse_args(list(rest))
