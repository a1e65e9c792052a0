"""Runs fault rows in a worker process, so a crash or a hang costs one row, not the run.

The worker (`python -m app.bench.fault_worker`) imports the app once and runs the rows
it is given one after another, announcing each on its protocol stream (JSON lines):
{"start": name}, then {"result": {...}}. This side holds each row to its timeout from
the moment it starts. A worker that dies mid-row is a crash of that row; one that
outruns it is a hang: its whole process group (the worker and any app it started) is
killed, and a fresh worker takes the rows that are left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.bench.fault_report import Outcome, RowResult
from app.bench.fault_rows import RowSpec

WORKER_START_TIMEOUT_S = 240.0  # imports, and building the tiny model on the first start
STDERR_TAIL_LINES = 12


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    kept = [line[:300] for line in text.splitlines() if line.strip()]
    return kept[-lines:]


def last_words(path: Path) -> str:
    """What a dead worker said last that explains it: a fatal error and where it
    struck, a panic, or the last exception line; else its last line (all shortened)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.startswith("Fatal Python error") or "panicked at" in line:
            where = next((lines[j] for j in range(i + 1, len(lines))
                          if lines[j].startswith("Current thread")), "")
            frame = ""
            if where:
                at = lines.index(where, i)
                frame = lines[at + 1] if at + 1 < len(lines) else ""
            return " ".join(part for part in (line, frame) if part)[:300]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


class _Worker:
    def __init__(self, rows: list[RowSpec], work: Path, index: str) -> None:
        self.stderr_path = work / f"worker-{index}.log"
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.bench.fault_worker", "--work", str(work),
             "--rows-json", json.dumps([dataclasses.asdict(r) for r in rows])],
            stdout=subprocess.PIPE,
            # Through a pipe, written here: a row may limit the worker's file sizes (the
            # full-disk fault), and its own log must not be what hits the limit.
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: a hang is killed whole
        )
        self._log = threading.Thread(target=self._copy_stderr, name="fault-worker-log",
                                     daemon=True)
        self._log.start()
        self._buffer = b""

    def _copy_stderr(self) -> None:
        assert self.proc.stderr is not None
        with open(self.stderr_path, "wb") as log:
            shutil.copyfileobj(self.proc.stderr, log, 4096)

    def read_line(self, deadline: float) -> dict | None:
        """The next protocol message, or None at the deadline or at the worker's end."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None  # the worker ended
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"noise": line.decode("utf-8", "replace")}

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> int | None:
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        # Apps a row started in the worker's group must not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.join(10)
        return code


def _death(code: int | None) -> str:
    if code is None:
        return "the worker process vanished"
    if code < 0:
        try:
            return f"the process died of signal {signal.Signals(-code).name}"
        except ValueError:
            return f"the process died of signal {-code}"
    return f"the process exited with status {code}"


def run_rows(
    rows: list[RowSpec],
    work: Path,
    report: Callable[[RowResult], None] = lambda result: None,
) -> list[RowResult]:
    """Run `rows` in worker processes; `report` hears each result as it comes. Rows of
    different lanes run side by side (one worker each), rows of a lane in order; the
    results come back in the order of `rows`."""
    lanes: dict[int, list[RowSpec]] = {}
    for row in rows:
        lanes.setdefault(row.lane, []).append(row)
    heard = threading.Lock()

    def told(result: RowResult) -> None:
        with heard:
            report(result)

    results: dict[int, list[RowResult]] = {}

    def run(lane: int) -> None:
        results[lane] = _run_lane(lanes[lane], work, told, lane)

    threads = [threading.Thread(target=run, args=(lane,), name=f"fault-lane-{lane}")
               for lane in sorted(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_name = {r.name: r for lane_results in results.values() for r in lane_results}
    return [by_name[row.name] for row in rows if row.name in by_name]


def _run_lane(rows: list[RowSpec], work: Path, report: Callable[[RowResult], None],
              lane: int) -> list[RowResult]:
    """One lane's rows in order, in one worker at a time (a fresh one after a crash or
    a hang)."""
    results: list[RowResult] = []
    left = list(rows)
    index = 0
    while left:
        index += 1
        worker = _Worker(left, work, f"{lane}-{index}")
        current: RowSpec | None = None
        started = time.monotonic()
        deadline = started + WORKER_START_TIMEOUT_S
        while left:
            message = worker.read_line(deadline)
            if message is None:
                break
            if "start" in message:
                current = next(r for r in left if r.name == message["start"])
                started = time.monotonic()
                deadline = started + current.timeout_s
            elif "result" in message and current is not None:
                result = RowResult(**message["result"])
                results.append(result)
                report(result)
                left.remove(current)
                current = None
                deadline = time.monotonic() + WORKER_START_TIMEOUT_S  # the next row starts
        if not left:
            worker.close()
            break
        hung = time.monotonic() >= deadline and worker.proc.poll() is None
        if hung:
            worker.kill()
        code = worker.close()
        tail = _tail(worker.stderr_path)
        victim = current or left[0]
        outcome = Outcome(notes=tail)
        if hung and current is not None:
            outcome.problem("hang", f"no result within {current.timeout_s:.0f} s")
        elif hung:
            outcome.problem("hang", "the worker did not start the row (see its log)")
        else:
            last = last_words(worker.stderr_path)
            outcome.problem("crash", f"{_death(code)}" + (f"; last words: {last}" if last
                                                           else ""))
        result = RowResult.of(victim.name, victim.group, outcome,
                              time.monotonic() - started)
        results.append(result)
        report(result)
        left.remove(victim)
    return results
