"""`duetto bench faults`: every fault of the campaign as a scripted session, one table.

Each row (fault_rows.py) puts one fault in front of the real app: the main window
offscreen with the tiny Qwen2.5-Omni model and files for devices, or the real
`python -m app` in a subprocess for process-level faults (kill -9, SIGTERM, two
instances). The table says, per fault, what the window or log told the user, what was
kept (recording seconds read back by wave, sox and libsndfile, settings, personas) and
the verdict. Rows run in a worker process (fault_runner.py), each under its own time
limit, so a crash or a hang is a row's verdict rather than the end of the run.

Exit status: 0 when every row passed, 1 when any crashed, hung, lost something, kept
the user in the dark or showed them an exception name, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from app.bench.fault_report import RowResult, table
from app.bench.fault_rows import ROWS, select
from app.bench.fault_runner import run_rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="run only these rows (names, groups or shell patterns, "
                             "e.g. 'mic-*' or 'settings')")
    parser.add_argument("--json", metavar="FILE", type=Path, default=None,
                        help="also write the results as JSON to FILE")
    parser.add_argument("--work", metavar="DIR", type=Path, default=None,
                        help="keep the rows' folders, recordings and logs here "
                             "(default: a temporary folder, removed at the end)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")


def _progress(result: RowResult) -> None:
    mark = "pass" if result.passed else f"FAIL ({result.verdict})"
    print(f"  {result.name:<26} {mark:<14} {result.seconds:5.1f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for row in ROWS:
            print(f"{row.name:<26} {row.group:<9} {row.what}")
        return 0
    try:
        rows = select(args.only)
    except ValueError as exc:
        print(f"duetto bench faults: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    print(f"duetto bench faults: {len(rows)} rows; the tiny Qwen2.5-Omni model, files "
          "for devices, the window offscreen", flush=True)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        results = run_rows(rows, args.work.resolve(), _progress)
    else:
        with tempfile.TemporaryDirectory(prefix="duetto-faults-") as work:
            results = run_rows(rows, Path(work), _progress)
    wall = time.monotonic() - started
    print()
    print(table(results))
    print(f"wall time {wall:.0f} s on {os.cpu_count()} CPU cores ({platform.machine()})")
    if args.json is not None:
        payload = {"wall_seconds": round(wall, 1), "cpu_cores": os.cpu_count(),
                   "passed": all(r.passed for r in results),
                   "rows": [r.to_dict() for r in results]}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0 if results and all(r.passed for r in results) else 1
