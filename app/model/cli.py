"""`duetto models`: list the known checkpoints, plan their memory, download one, build a
tiny one.

Errors the user can act on print one line to stderr and exit 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading
from pathlib import Path

from app import paths
from app.model import registry
from app.model.contract import BackendError, Quant

log = logging.getLogger(__name__)

EXIT_ERROR = 2
_QUANT_ORDER = (Quant.BF16, Quant.INT8, Quant.NF4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the known checkpoints, their needs, and what is downloaded")

    plan = sub.add_parser("plan", help="what a checkpoint needs on the GPU, part by part")
    plan.add_argument("target", nargs="?", metavar="ID|DIR",
                      help="a registry id or a model folder (default: every entry the app runs)")
    plan.add_argument("--quant", choices=[q.value for q in Quant], default=Quant.NF4.value,
                      help="how the weights are held (default nf4)")
    plan.add_argument("--context", type=int, default=None, metavar="N",
                      help="tokens of context (Qwen) or 80 ms frames (Moshi); default: the "
                           "family's (16384 tokens; Moshi's 3000 frames); at most the model's")
    plan.add_argument("--free-gib", type=float, default=None, metavar="GIB",
                      help="plan the longest context that fits this much free GPU memory "
                           "instead, as the app does before loading")
    plan.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                      help="where it would run (default cuda: a card with native bf16)")
    plan.add_argument("--json", action="store_true",
                      help="print a JSON list of plans (id, quant, context_tokens, total_gib, "
                           "parts, ...)")

    get = sub.add_parser("get", help="download a checkpoint into the models folder")
    get.add_argument("id", help="a registry id (see `duetto models list`)")
    get.add_argument("--revision", default=None,
                     help="a commit, branch or tag (default: the main branch)")

    tiny = sub.add_parser("tiny", help="build a tiny random-weight checkpoint for tests")
    tiny.add_argument("family", help="a model family, e.g. qwen2.5-omni")
    tiny.add_argument("dir", type=Path, help="folder to write it into")
    tiny.add_argument("--min-answer-tokens", type=int, default=8,
                      help="speech tokens every answer holds at least (default 8)")
    tiny.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    actions = {"list": _list, "plan": _plan, "get": _get, "tiny": _tiny}
    try:
        return actions[args.action](args)
    except BackendError as exc:
        print(f"duetto models {args.action}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def list_rows() -> list[list[str]]:
    """The `list` table, header first (also used by tests)."""
    present = {c.id: c for c in registry.cached()}
    header = ["id", "family", "license", "download", *(f"VRAM {q.value}" for q in _QUANT_ORDER),
              "supported", "cached"]
    rows = [header]
    for entry in registry.entries():
        found = present.get(entry.id)
        rows.append([
            entry.id,
            entry.family,
            entry.license,
            f"{entry.download_gb:.1f} GB",
            *(_vram_cell(entry, q) for q in _QUANT_ORDER),
            "yes" if entry.supported else "not yet",
            f"yes @{found.revision[:10]}" if found else "no",
        ])
    return rows


def _vram_cell(entry: registry.RegistryEntry, q: Quant) -> str:
    figure = entry.vram_gib.get(q)
    return "-" if figure is None else f"{figure:.1f} GiB"


def _list(args: argparse.Namespace) -> int:
    print(_table(list_rows()))
    print(f"\nmodels folder: {paths.models_dir()}")
    print("VRAM: the memory plan (weights, quantization state, the default context, working "
          "memory) on a card with native bf16; `duetto models plan ID` shows it part by part.")
    return 0


def plans(args: argparse.Namespace) -> list:
    """The plans `duetto models plan` prints (also used by tests)."""
    from app.model import fit, memory_plan

    q = Quant(args.quant)
    if args.target is None:
        planners = [memory_plan.planner_for_entry(e.id, device=args.device)
                    for e in registry.entries() if e.supported]
    elif Path(args.target).expanduser().is_dir():
        planners = [memory_plan.planner_for_folder(Path(args.target), device=args.device)]
    else:
        entry = registry.get(args.target)
        if not entry.supported:
            raise BackendError(f"{entry.id} cannot run in this version of Duetto, so it has no "
                               "memory plan", hint="see `duetto models list`")
        planners = [memory_plan.planner_for_entry(entry.id, device=args.device)]
    out = []
    for planner in planners:
        if args.free_gib is None:
            out.append(planner.plan(q, args.context))
        else:
            free = int(args.free_gib * memory_plan.GIB)
            sized = fit.size(planner, q, args.context, args.device, free=free)
            plan = sized.plan
            out.append(dataclasses.replace(plan, notes=(*plan.notes, sized.note)))
    return out


def _plan(args: argparse.Namespace) -> int:
    if args.context is not None and args.context < 1:
        raise BackendError("--context must be at least 1")
    found = plans(args)
    if args.json:
        print(json.dumps([p.to_json() for p in found], indent=1))
        return 0
    for i, p in enumerate(found):
        print(("\n" if i else "") + "\n".join(p.lines()))
    print("\nworking memory is an estimate from the shapes until `duetto bench gpu` measures it")
    return 0


def _get(args: argparse.Namespace) -> int:
    from app.model.download import download

    entry = registry.get(args.id)
    if not entry.supported:
        print(f"note: {entry.id} can be downloaded, but this version of Duetto cannot run it "
              "yet", file=sys.stderr)
    print(f"{entry.id}: {entry.hub_id}, about {entry.download_gb:.1f} GB, {entry.license}",
          file=sys.stderr)
    cancel = threading.Event()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["path"] = download(entry, lambda what, frac: None, cancel,
                                       revision=args.revision, show_bar=True)
        except BaseException as exc:  # handed to the main thread, which reports it
            outcome["error"] = exc

    # The download runs in a worker so that Ctrl-C reaches the main thread at once; it
    # then sets `cancel`, which stops every download thread at its next chunk.
    worker = threading.Thread(target=work, name="duetto-download", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        worker.join(30)
        print(f"\nstopped; run `duetto models get {entry.id}` again to resume", file=sys.stderr)
        return 130
    error = outcome.get("error")
    if isinstance(error, BackendError):
        raise error
    if isinstance(error, BaseException):
        log.error("download failed", exc_info=error)
        raise BackendError(f"the download failed ({type(error).__name__}: {error})",
                           hint="run the same command again: files are resumed")
    source = registry.resolve(entry.id)
    print(f"{entry.id} is in {source.local_dir} at revision {source.revision}")
    return 0


def _tiny(args: argparse.Namespace) -> int:
    from app.model.tiny import build_tiny

    if args.min_answer_tokens < 1:
        raise BackendError("--min-answer-tokens must be at least 1")
    try:
        folder = build_tiny(args.family, args.dir, min_answer_tokens=args.min_answer_tokens,
                            seed=args.seed)
    except (ValueError, OSError) as exc:
        raise BackendError(f"cannot build a tiny {args.family} model in {args.dir} ({exc})"
                           ) from exc
    print(folder)
    return 0
