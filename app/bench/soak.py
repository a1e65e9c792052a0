"""`duetto bench soak --minutes N`: one long conversation whose devices come and go.

The tiny Qwen2.5-Omni model talks with a virtual user for N minutes through the app's
own conversation path (load_backend, build_session: the timeline, the session, the
recorder, the device keepers), with a virtual microphone that hears the user ask a
question every ~20 s and a virtual camera (virtual_devices.py stand in for PortAudio
and OpenCV on a machine without devices). On a schedule the microphone and the camera
are unplugged in turn for a few seconds and plugged back in.

It prints the process's resident memory by minute, two ways: the memory the session
keeps (the resident size just after each of the worker's heap trims between units,
app/flow/heap.py) and samples taken every 2 s at whatever moment they fall. The second
also holds what the model is computing right then, which grows with the context (the
attention over it) until the context is full and trimmed; the first is where a leak
shows. It checks, exiting 1 on a miss:

* memory flat: the kept memory of every minute from the second on within 20 MB of
  minute 2's (medians by minute);
* the recording complete: as long as the conversation ran (wave, sox and libsndfile);
* every unplugged device came back;
* no thread of the conversation left once it is closed.

A benchmark, not a test: the 60-minute run takes an hour of a machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAT_MB = 20.0
SAMPLE_S = 2.0
QUESTION_EVERY_S = 20.0
RECORDING_SLACK_S = 2.0  # the recording's length may differ this much from the wall time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="how long the conversation runs (default 60)")
    parser.add_argument("--model", metavar="DIR", type=Path, default=None,
                        help="a tiny Qwen2.5-Omni folder (default: build one)")
    parser.add_argument("--drop-every", type=float, default=60.0, metavar="S",
                        help="seconds between device drop-outs; the microphone and the "
                             "camera take turns (default 60)")
    parser.add_argument("--drop-for", type=float, default=5.0, metavar="S",
                        help="how long a device stays unplugged (default 5)")
    parser.add_argument("--no-camera", action="store_true", help="run without the camera")
    parser.add_argument("--out", metavar="DIR", type=Path, default=None,
                        help="keep the recording here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", type=Path, default=None,
                        help="also write the figures as JSON to FILE")


@dataclass
class Drop:
    device: str  # "microphone" or "camera"
    at: float  # seconds into the conversation
    back: float


def schedule(minutes: float, every: float, length: float, camera: bool) -> list[Drop]:
    """Drop-outs from the first `every` on, alternating microphone and camera."""
    drops = []
    k = 1
    while k * every + length < minutes * 60.0 - 5.0:
        device = "camera" if camera and k % 2 == 0 else "microphone"
        drops.append(Drop(device, k * every, k * every + length))
        k += 1
    return drops


def minute_medians(samples: list[tuple[float, float]], least: int = 10
                   ) -> list[tuple[int, float, int]]:
    """(minute number from 1, median MB, samples) for each minute with `least`+ samples."""
    by_minute: dict[int, list[float]] = {}
    for t, mb in samples:
        by_minute.setdefault(int(t // 60) + 1, []).append(mb)
    return [(m, statistics.median(v), len(v)) for m, v in sorted(by_minute.items())
            if len(v) >= least]


def memory_flat(medians: list[tuple[int, float, int]], limit_mb: float = FLAT_MB
                ) -> tuple[bool, float | None]:
    """Whether every minute from the second on stays within `limit_mb` of minute 2; and
    the largest distance. (True, None) when there is no minute 2 to compare with."""
    base = next((mb for m, mb, _ in medians if m == 2), None)
    if base is None:
        return True, None
    worst = max(abs(mb - base) for m, mb, _ in medians if m >= 2)
    return worst <= limit_mb, worst


@dataclass
class SoakResult:
    minutes: float
    wall_s: float = 0.0
    memory_mb: list[tuple[int, float, int]] = field(default_factory=list)  # at any moment
    kept_mb: list[tuple[int, float, int]] = field(default_factory=list)  # after heap trims
    memory_worst_mb: float | None = None  # of the kept memory: the gated figure
    sampled_worst_mb: float | None = None
    recording: list[str] = field(default_factory=list)
    recording_s: float | None = None
    drops: int = 0
    restored: dict[str, int] = field(default_factory=dict)
    answers: int = 0
    threads_left: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def _voice() -> Any:
    import numpy as np

    from app.bench.fault_inputs import QUESTION
    from app.bench.speech_cache import RATE, SpeechCache

    question = SpeechCache().speak(QUESTION)
    gap = np.zeros(int(QUESTION_EVERY_S * RATE) - len(question), np.float32)
    return np.concatenate([np.zeros(int(0.3 * RATE), np.float32), question, gap]), RATE


def run_soak(args: argparse.Namespace, work: Path) -> SoakResult:
    from app.bench.virtual_devices import VirtualCamera, VirtualSoundCard, installed

    result = SoakResult(args.minutes)
    model = args.model
    if model is None:
        from app.model.tiny import build_tiny

        model = build_tiny("qwen2.5-omni", work / "model", min_answer_tokens=40)
    voice, rate = _voice()
    card = VirtualSoundCard(voice, rate)
    cam = VirtualCamera()
    with installed(card, cam):
        return _converse(args, model, card, cam, work, result)


def _converse(args: argparse.Namespace, model: Path, card: Any, cam: Any, work: Path,
              result: SoakResult) -> SoakResult:
    from app.bench.fault_recording import RECORDING, folders, read_all
    from app.bench.threads_left import threads_left
    from app.flow.conversation import ConversationOptions, build_session, load_backend
    from app.flow.device_keeper import RESTORED
    from app.flow.events import EventKind
    from app.model.contract import ModelSource, Persona, Quant, Voice

    record_dir = (args.out or work) / "recordings"
    options = ConversationOptions(
        model=ModelSource(local_dir=model),
        persona=Persona("soak", "You are a helpful assistant. Answer briefly.",
                        voice=Voice(builtin="Chelsie")),
        quant=Quant.BF16, mic=None, camera=None if args.no_camera else 0, speaker="null",
        record_dir=record_dir, backend_options={"device": "cpu"},
    )
    before = set(threading.enumerate())
    backend = load_backend(options, lambda *_: None)
    session = build_session(backend, options)
    counts = {"speaking": 0, "lost": 0, RESTORED: 0, "overflow": 0, "error": 0}
    restored: dict[str, int] = {}

    def on_event(event: Any) -> None:
        if event.kind is EventKind.STATE and event.data.get("state") == "speaking":
            counts["speaking"] += 1
        elif event.kind is EventKind.DEVICE and event.data.get("kind") in ("lost", RESTORED):
            counts[event.data["kind"]] += 1
            if event.data["kind"] == RESTORED:
                source = str(event.data.get("source"))
                restored[source] = restored.get(source, 0) + 1
        elif event.kind is EventKind.OVERFLOW:
            counts["overflow"] += 1
        elif event.kind is EventKind.ERROR:
            counts["error"] += 1

    session.subscribe(on_event)
    drops = schedule(args.minutes, args.drop_every, args.drop_for, not args.no_camera)
    result.drops = len(drops)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    session.start()
    try:
        pending = [(d.at, "unplug", d) for d in drops] + [(d.back, "plug", d) for d in drops]
        pending.sort(key=lambda item: item[0])
        next_sample = 0.0
        next_print = 60.0
        end = args.minutes * 60.0
        while (now := time.monotonic() - started) < end:
            while pending and pending[0][0] <= now:
                _, action, drop = pending.pop(0)
                device = card if drop.device == "microphone" else cam
                device.unplug() if action == "unplug" else device.plug_in()
            if now >= next_sample:
                samples.append((now, _rss_mb()))
                next_sample += SAMPLE_S
            if now >= next_print:
                done = minute_medians(samples)
                if done:
                    m, mb, _ = done[-1]
                    print(f"  minute {m}: {mb:.1f} MB resident (median); answers "
                          f"{counts['speaking']}, devices lost {counts['lost']} / back "
                          f"{counts[RESTORED]}", flush=True)
                next_print += 60.0
            time.sleep(0.2)
    finally:
        session.stop("soak over")
        result.wall_s = time.monotonic() - started
        backend.close()
    result.threads_left = threads_left(before)
    result.memory_mb = minute_medians(samples)
    _, result.sampled_worst_mb = memory_flat(result.memory_mb)
    # The worker trims every 10 s between units: about 6 samples a minute.
    kept = [(t - started, rss / 1e6) for t, rss in session.heap.kept]
    result.kept_mb = minute_medians(kept, least=3)
    flat, worst = memory_flat(result.kept_mb)
    result.memory_worst_mb = worst
    if not session.heap.available:
        flat = False
        result.misses.append("no heap trims here (not glibc): the kept memory is unknown")
    made = folders(record_dir)
    if made:
        reads = read_all(made[-1] / RECORDING)
        result.recording = [str(r) for r in reads]
        lengths = [r.seconds for r in reads if r.seconds is not None]
        result.recording_s = min(lengths) if lengths else None
        if len(lengths) < len([r for r in reads if "not installed" not in r.error]):
            result.misses.append("the recording is unreadable in " + ", ".join(
                r.reader for r in reads if r.seconds is None))
    result.answers = counts["speaking"]
    result.restored = restored
    result.extra = {"lost": counts["lost"], "overflows": counts["overflow"],
                    "errors": counts["error"], "metrics": session.metrics.summary()}
    if not flat and worst is not None:
        result.misses.append(f"the kept resident memory moved {worst:.1f} MB from minute "
                             f"2's (limit {FLAT_MB:.0f} MB)")
    if result.recording_s is None:
        result.misses.append("no recording")
    elif abs(result.recording_s - result.wall_s) > RECORDING_SLACK_S:
        result.misses.append(f"the recording holds {result.recording_s:.1f} s of a "
                             f"{result.wall_s:.1f} s conversation")
    if counts[RESTORED] < len(drops):
        result.misses.append(f"{len(drops) - counts[RESTORED]} of {len(drops)} unplugged "
                             "devices did not come back")
    if result.threads_left:
        result.misses.append(f"threads left after closing: {', '.join(result.threads_left)}")
    if result.answers == 0:
        result.misses.append("the assistant never answered")
    return result


def report(result: SoakResult) -> str:
    lines = ["minute | kept MB (median, after heap trims) | sampled MB (median, any moment)"]
    kept = {m: mb for m, mb, _ in result.kept_mb}
    sampled = {m: mb for m, mb, _ in result.memory_mb}
    base_kept, base_sampled = kept.get(2), sampled.get(2)

    def cell(mb: float | None, base: float | None, m: int) -> str:
        if mb is None:
            return "-"
        delta = "" if base is None or m < 2 else f" ({mb - base:+.1f})"
        return f"{mb:.1f}{delta}"

    for m in sorted(set(kept) | set(sampled)):
        lines.append(f"{m:>6} | {cell(kept.get(m), base_kept, m):>36} | "
                     f"{cell(sampled.get(m), base_sampled, m)}")

    def far(mb: float | None) -> str:
        return "n/a (no minute 2)" if mb is None else f"{mb:.1f} MB"

    lines += [
        f"memory kept: largest distance from minute 2 {far(result.memory_worst_mb)} "
        f"(limit {FLAT_MB:.0f} MB); sampled at any moment: {far(result.sampled_worst_mb)} "
        "(not gated: it holds the model's working memory, which grows with the context)",
        f"conversation {result.wall_s:.1f} s; recording: {', '.join(result.recording) or '-'}",
        f"devices unplugged {result.drops}, back {sum(result.restored.values())} "
        f"({result.restored}); answers {result.answers}; overflows "
        f"{result.extra.get('overflows')}; errors {result.extra.get('errors')}",
        f"threads left after closing: {', '.join(result.threads_left) or 'none'}",
        "PASS" if not result.misses else "FAIL: " + "; ".join(result.misses),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    logging.getLogger("transformers").setLevel(logging.ERROR)
    print(f"duetto bench soak: {args.minutes:g} minutes on the tiny Qwen2.5-Omni model, "
          f"devices dropping every {args.drop_every:g} s for {args.drop_for:g} s; "
          f"{os.cpu_count()} CPU cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="duetto-soak-") as tmp:
        result = run_soak(args, Path(tmp))
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result.__dict__, indent=1, default=str) + "\n")
    return 0 if not result.misses else 1

