"""Fault rows on the app's process: killed mid-answer (SIGKILL, SIGTERM), and two copies
started in the same second. Each runs the real `python -m app` (offscreen, the tiny
model, files for devices, recording on) in a subprocess over the row's own folders.

What was kept is read back the way other programs read it: Python's `wave`, sox and
libsndfile must each find all of the recording but its last moments. What was said is
the app's stderr (less the libraries' loading chatter) and the errors and device news
of its event log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import app
from app.bench.fault_inputs import base_settings, write_settings
from app.bench.fault_recording import EVENTS, RECORDING, folders, read_all
from app.bench.fault_report import Outcome

SPEAKING = '"state": "speaking"'
START_TIMEOUT_S = 90.0  # imports, load and the first answer on a busy 2-core machine
# The recorder rewrites the header at least once a second; the user's and the
# assistant's channels may also wait for each other up to two seconds before a write.
MAY_LOSE_S = 3.0
_NOISE = ("[transformers]", "Loading weights", "Writing model", "it/s]", "s/it]",
          "qt.qpa", "QStandardPaths")


class AppProcess:
    """`python -m app --model TINY --mic FILE --speaker null --start` over `home`."""

    def __init__(self, ctx: Any, home: Path, name: str) -> None:
        self.name = name
        self.stderr_path = home / f"{name}.stderr"
        env = dict(os.environ, DUETTO_CONFIG_DIR=str(home / "config"),
                   DUETTO_DATA_DIR=str(home / "data"), QT_QPA_PLATFORM="offscreen")
        command = [sys.executable, "-m", "app", "--model", str(ctx.model), "--quant", "bf16",
                   "--device", "cpu", "--mic", str(ctx.media.speech_wav), "--speaker", "null",
                   "--start"]
        with open(self.stderr_path, "wb") as log:
            # From the folder that holds the `app` package this harness runs: the same code.
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=Path(app.__file__).resolve().parents[1])
        self.started = time.monotonic()

    def signal(self, number: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(number)

    def end(self, timeout_s: float = 15.0) -> int:
        """Wait for it to exit (SIGKILL after `timeout_s`); its exit status."""
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def said(self) -> list[str]:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        lines = []
        for line in text.replace("\r", "\n").splitlines():
            line = line.strip()
            if line and not any(noise in line for noise in _NOISE):
                lines.append(f"{self.name}: {line}")
        return lines

    def crashed(self) -> bool:
        return any("Traceback (most recent call last)" in line for line in self.said())


def _log_news(folder: Path) -> list[str]:
    """Errors and device news of a recording's event log (a torn last line skipped)."""
    news = []
    try:
        lines = (folder / EVENTS).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return news
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "error" or (
                event.get("event") == "device" and event.get("kind") not in ("started",)):
            news.append(f"log: {event.get('event')}: "
                        f"{event.get('message') or event.get('kind', '')}")
    return news


def _sessions_in(folder: Path) -> int:
    """How many conversations began in this folder's event log."""
    try:
        text = (folder / EVENTS).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return text.count('"reason": "session started"')


def _wait(predicate: Any, timeout_s: float, poll_s: float = 0.2) -> bool:
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(poll_s)
    return True


def _speaking(recordings: Path) -> bool:
    for folder in folders(recordings):
        try:
            if SPEAKING in (folder / EVENTS).read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            continue
    return False


def _kill_mid_answer(ctx: Any, number: int) -> Outcome:
    out = Outcome()
    write_settings(ctx.config, base_settings(ctx.model))
    recordings = ctx.data / "recordings"
    proc = AppProcess(ctx, ctx.home, "app")
    seen: dict[str, float] = {}

    def started() -> bool:
        if "folder" not in seen and folders(recordings):
            seen["folder"] = time.monotonic()
        return _speaking(recordings) or proc.proc.poll() is not None

    answered = _wait(started, START_TIMEOUT_S) and proc.proc.poll() is None
    if answered:
        time.sleep(0.5)  # well inside the answer (about 3 s of speech)
    killed_at = time.monotonic()
    proc.signal(number)
    code = proc.end()
    name = signal.Signals(number).name
    out.said = proc.said()
    if proc.crashed():
        out.problem("crash", "a traceback on the app's stderr")
    if not answered:
        out.problem("broken", f"no answer within {START_TIMEOUT_S:.0f} s (exit {code})")
    made = folders(recordings)
    if not made:
        out.problem("lost", "no recording folder")
        return out
    out.said += _log_news(made[-1])
    expected = killed_at - seen.get("folder", killed_at)
    reads = read_all(made[-1] / RECORDING)
    out.kept = f"of ~{expected:.0f} s: " + ", ".join(str(r) for r in reads)
    for r in reads:
        if r.seconds is None:
            if "not installed" not in r.error:
                out.problem("lost", f"after {name} {r.reader} cannot read the recording: "
                                    f"{r.error}")
        elif r.seconds < expected - MAY_LOSE_S:
            out.problem("lost", f"after {name} {r.reader} reads {r.seconds:.1f} s of "
                                f"~{expected:.0f} s")
    out.check_words()
    return out


def kill_9(ctx: Any) -> Outcome:
    return _kill_mid_answer(ctx, signal.SIGKILL)


def sigterm(ctx: Any) -> Outcome:
    return _kill_mid_answer(ctx, signal.SIGTERM)


class _FirstSeen:
    """When each recording folder under `recordings` was first seen by `count_older`."""

    def __init__(self, recordings: Path) -> None:
        self.recordings = recordings
        self.seen: dict[Path, float] = {}

    def count_older(self, seconds: float) -> int:
        now = time.monotonic()
        for folder in folders(self.recordings):
            if (folder / EVENTS).exists():
                self.seen.setdefault(folder, now)
        return sum(now - at >= seconds for at in self.seen.values())


def two_instances(ctx: Any) -> Outcome:
    out = Outcome()
    write_settings(ctx.config, base_settings(ctx.model))
    recordings = ctx.data / "recordings"
    procs = (AppProcess(ctx, ctx.home, "app 1"), AppProcess(ctx, ctx.home, "app 2"))
    seen = _FirstSeen(recordings)
    # Until both record (a few seconds in), or one has ended (refused), or time is up.
    _wait(lambda: seen.count_older(3.0) >= 2
          or any(p.proc.poll() is not None for p in procs), START_TIMEOUT_S)
    if any(p.proc.poll() is not None for p in procs):  # one refused: the other records
        _wait(lambda: seen.count_older(3.0) >= 1
              or all(p.proc.poll() is not None for p in procs), START_TIMEOUT_S)
    running = [p for p in procs if p.proc.poll() is None]
    for p in procs:
        p.signal(signal.SIGTERM)
    codes = {p.name: p.end() for p in procs}
    for p in procs:
        out.said += p.said()
        if p.crashed():
            out.problem("crash", f"a traceback on {p.name}'s stderr")
    made = folders(recordings)
    for folder in made:
        out.said += _log_news(folder)
        if _sessions_in(folder) > 1:
            out.problem("lost", f"two conversations wrote one recording folder "
                                f"({folder.name})")
        for r in read_all(folder / RECORDING):
            if r.seconds is None and "not installed" not in r.error:
                out.problem("lost", f"{r.reader} cannot read {folder.name}/{RECORDING}: "
                                    f"{r.error}")
    if not made:
        out.problem("broken", "neither instance recorded a conversation")
    told = any(word in line.split(": ", 1)[-1].lower() for line in out.said
               for word in ("already running", "another duetto", "instance", "other window"))
    if not told:
        out.problem("silent", "nothing said a second Duetto was started")
    out.kept = (f"{len(made)} recording folder(s); {len(running)} of 2 running when ended; "
                f"exit codes {sorted(codes.values())}")
    out.check_words()
    return out
