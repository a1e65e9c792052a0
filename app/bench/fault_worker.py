"""The worker process of `duetto bench faults`: runs the rows it is given, in order.

`python -m app.bench.fault_worker --work DIR ROW...` (started by fault_runner.py).
It writes one JSON line per message on its protocol stream, which is the stdout it was
started with; anything else that writes to stdout (a library's progress bar) goes to
stderr instead, so it cannot garble the protocol. Exceptions that escape a thread or a
Qt slot are caught by hooks installed here and charged to the row that was running.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from app.bench.fault_inputs import Media, prepare
from app.bench.fault_report import Outcome, RowResult
from app.bench.fault_rows import RowSpec

ANSWER_TOKENS = 140  # the tiny model's answers: about 3 s of speech, long enough to cut


@dataclass
class RowContext:
    """What a row works with: its own user folders, the tiny model and the prepared
    media (both made on first use, once per run, so rows that need neither start at
    once)."""

    name: str
    home: Path  # fresh for this row: config/, data/ and anything the row makes
    work: Path  # the run's folder: the model and media live there

    @property
    def config(self) -> Path:
        return self.home / "config"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def model(self) -> Path:
        return tiny_model(self.work)

    @property
    def moshi_model(self) -> Path:
        """A tiny Moshi/PersonaPlex (a family that speaks with reference recordings)."""
        return tiny_model(self.work, "moshi")

    @property
    def model_path(self) -> Path:
        """Where the model is, without building it (for settings that only name it)."""
        return self.work / "model"

    @property
    def media(self) -> Media:
        return media(self.work)


_escaped: list[str] = []


def _install_hooks() -> None:
    def thread_hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        _escaped.append(f"in thread {name}: {args.exc_type.__name__}: {args.exc_value}")
        traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback)

    def main_hook(exc_type, exc, tb) -> None:  # Qt calls this for a slot that raised
        _escaped.append(f"{exc_type.__name__}: {exc}")
        traceback.print_exception(exc_type, exc, tb)

    threading.excepthook = thread_hook
    sys.excepthook = main_hook


@contextlib.contextmanager
def _run_lock(work: Path) -> Iterator[None]:
    """One worker at a time makes the run's shared files (workers run side by side)."""
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tiny_model(work: Path, family: str = "qwen2.5-omni") -> Path:
    """A tiny random-weight model of this run, built once (as `duetto models tiny` does);
    Qwen2.5-Omni's answers last about 3 s."""
    folder = work / ("model" if family == "qwen2.5-omni" else f"model-{family}")
    if (folder / "config.json").exists():
        return folder
    from app.model.tiny import build_tiny

    with _run_lock(work):
        if (folder / "config.json").exists():  # another worker made it meanwhile
            return folder
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        options = {"min_answer_tokens": ANSWER_TOKENS} if family == "qwen2.5-omni" else {}
        build_tiny(family, partial, **options)
        partial.rename(folder)
    return folder


def media(work: Path) -> Media:
    with _run_lock(work):
        return prepare(work / "media")


def run_row(spec: RowSpec, work: Path) -> RowResult:
    name = spec.name
    home = work / "rows" / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    ctx = RowContext(name, home, work)
    module_name, _, function = spec.target.partition(":")
    started = time.monotonic()
    before = len(_escaped)
    try:
        row = getattr(importlib.import_module(module_name), function)
        outcome = row(ctx)
    except Exception as exc:  # raised through the row (the app's or the row's): run on
        outcome = Outcome(notes=traceback.format_exc().splitlines()[-16:])
        outcome.problem("crash", f"{type(exc).__name__} raised through the row: {exc} "
                                 "(traceback in the JSON notes)")
    for escaped in _escaped[before:]:
        outcome.problem("crash", f"an exception escaped: {escaped}")
    return RowResult.of(name, spec.group, outcome, time.monotonic() - started)


def _protocol_stream() -> IO[str]:
    """The original stdout for protocol lines; fd 1 itself now points at stderr."""
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.bench.fault_worker")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--rows-json", required=True,
                        help="the rows to run, in order: a JSON list of RowSpec fields")
    args = parser.parse_args(argv)
    rows = [RowSpec(**{**fields, "models": tuple(fields.get("models", ()))})
            for fields in json.loads(args.rows_json)]
    protocol = _protocol_stream()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    _install_hooks()
    for spec in rows:
        for family in spec.models:  # made before the row's clock starts
            tiny_model(args.work, family)
        if spec.models:
            media(args.work)
        protocol.write(json.dumps({"start": spec.name}) + "\n")
        result = run_row(spec, args.work)
        protocol.write(json.dumps({"result": result.to_dict()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
