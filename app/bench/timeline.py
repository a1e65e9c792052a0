"""`duetto bench timeline`: a simulated hour of mic audio and camera frames through the timeline.

The producer pushes 10 ms blocks of mic audio (as a device callback would) and 30 fps
640×480 frames, each stamped on one virtual capture axis; after every block a consumer
asks for the next unit, as the session loop does. Audio blocks and frames are a few
preallocated arrays reused over and over: the figures measure the timeline, not the
making of test data.

Targets: at least 1000× faster than real time on one core, and flat memory (RSS after
the run within 10 MB of RSS after the first simulated minute). Every unit must come out
whole, with no overflow and no gap, since the consumer keeps up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil

from app.flow.resample import StreamResampler
from app.flow.timeline import Timeline

MB = 1024 * 1024
BLOCK_SECONDS = 0.01  # one device callback


@dataclass
class Figures:
    simulated_s: float
    wall_s: float
    realtime_factor: float
    native_rate: int
    out_rate: int
    unit_seconds: float
    fps: float
    cpu: str
    units_cut: int
    units_expected: int
    bad_units: int
    overflows: int
    gap_samples: int
    frames_pushed: int
    frames_delivered: int
    frames_skipped: int
    frames_dropped: int
    rss_first_minute_mb: float
    rss_end_mb: float
    rss_growth_mb: float | None
    rss_peak_sampled_mb: float
    max_rss_mb: float | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="simulated minutes of audio (default 60)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the figures and verdicts as JSON here")
    parser.add_argument("--native-rate", type=int, default=48_000,
                        help="microphone rate in Hz (default 48000)")
    parser.add_argument("--out-rate", type=int, default=16_000,
                        help="consumer rate in Hz (default 16000)")
    parser.add_argument("--unit-seconds", type=float, default=1.0,
                        help="unit length in seconds (default 1.0)")
    parser.add_argument("--fps", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--target-rtf", type=float, default=1000.0,
                        help="least acceptable real-time factor (default 1000)")
    parser.add_argument("--memory-slack-mb", type=float, default=10.0,
                        help="most RSS may grow after the first minute (default 10 MB)")


def _pin_one_core() -> tuple[str, set[int] | None]:
    """Pin this process to one CPU; return its name and the affinity to restore.

    Affinity binds every thread numpy or scipy might start, which thread-count variables
    cannot do once those libraries are imported (and setting them at import time here
    would leak into the app, since `duetto` imports every subcommand to build its parser).
    """
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (this platform cannot set CPU affinity)", None
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    return f"CPU {cpu}", before


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _max_rss_mb() -> float | None:
    """The process's peak resident memory, where the platform keeps it."""
    try:
        import resource  # Unix only; imported here so the CLI still loads on Windows
    except ImportError:
        peak = getattr(psutil.Process().memory_info(), "peak_wset", None)  # Windows
        return None if peak is None else peak / MB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / MB if sys.platform == "darwin" else peak / 1024


def measure(
    minutes: float,
    native_rate: int = 48_000,
    out_rate: int = 16_000,
    unit_seconds: float = 1.0,
    fps: float = 30.0,
    cpu: str = "",
) -> Figures:
    """Run the simulation and return its figures (the timeline validates the rates)."""
    timeline = Timeline(unit_seconds, out_rate, native_rate=native_rate, frames_per_unit=1)
    block_n = round(native_rate * BLOCK_SECONDS)
    rng = np.random.default_rng(7)
    blocks = [(0.1 * rng.standard_normal(block_n)).astype(np.float32) for _ in range(32)]
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    n_blocks = round(minutes * 60 / BLOCK_SECONDS)
    blocks_per_minute = round(60 / BLOCK_SECONDS)
    unit_samples = timeline.unit_samples

    push_audio, push_frame, next_unit = timeline.push_audio, timeline.push_frame, timeline.next_unit
    frame_index = 0
    next_frame_t = 0.0
    units = bad = 0
    rss_first_minute = rss_peak = _rss()
    start = time.perf_counter()
    blocks_per_second = round(1 / BLOCK_SECONDS)
    for i in range(n_blocks):
        push_audio(blocks[i % 32], native_rate, i / blocks_per_second)
        block_end = (i + 1) / blocks_per_second
        while next_frame_t < block_end:
            push_frame(frames[frame_index % 4], next_frame_t)
            frame_index += 1
            next_frame_t = frame_index / fps
        unit = next_unit()
        if unit is not None:
            units += 1
            if len(unit.audio) != unit_samples or len(unit.frames) != 1 or unit.gap_samples:
                bad += 1
        if (i + 1) % blocks_per_minute == 0:
            rss = _rss()  # once a simulated minute: a syscall, negligible here
            rss_peak = max(rss_peak, rss)
            if i + 1 == blocks_per_minute:
                rss_first_minute = rss
    wall = time.perf_counter() - start
    rss_end = _rss()
    rss_peak = max(rss_peak, rss_end)
    stats = timeline.stats()
    simulated = n_blocks * BLOCK_SECONDS
    return Figures(
        simulated_s=simulated,
        wall_s=wall,
        realtime_factor=simulated / wall if wall > 0 else math.inf,
        native_rate=native_rate,
        out_rate=out_rate,
        unit_seconds=unit_seconds,
        fps=fps,
        cpu=cpu,
        units_cut=units,
        # Units whose audio is complete: the last one also needs the resampler's look-ahead.
        units_expected=StreamResampler(native_rate, out_rate).outputs_ready(n_blocks * block_n)
        // unit_samples,
        bad_units=bad,
        overflows=stats.overflows,
        gap_samples=stats.gap_samples,
        frames_pushed=stats.frames_pushed,
        frames_delivered=stats.frames_delivered,
        frames_skipped=stats.frames_skipped,
        frames_dropped=stats.frames_dropped,
        rss_first_minute_mb=rss_first_minute / MB,
        rss_end_mb=rss_end / MB,
        rss_growth_mb=(rss_end - rss_first_minute) / MB if n_blocks > blocks_per_minute else None,
        rss_peak_sampled_mb=rss_peak / MB,
        max_rss_mb=_max_rss_mb(),
    )


def verdicts(fig: Figures, target_rtf: float, slack_mb: float) -> dict[str, bool | None]:
    """Each target: True met, False missed, None not measurable in this run."""
    return {
        "realtime_factor": fig.realtime_factor >= target_rtf,
        "memory_flat": None if fig.rss_growth_mb is None else fig.rss_growth_mb <= slack_mb,
        "units_whole": fig.units_cut == fig.units_expected and fig.bad_units == 0,
        "no_overflow_or_gap": fig.overflows == 0 and fig.gap_samples == 0,
    }


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else "yes" if ok else "NO"


def _table(fig: Figures, ok: dict[str, bool | None], target_rtf: float, slack: float) -> str:
    growth = "n/a (needs > 1 min)" if fig.rss_growth_mb is None else f"{fig.rss_growth_mb:+.1f} MB"
    rows = [
        ("real-time factor", f"{fig.realtime_factor:,.0f}x", f">= {target_rtf:,.0f}x",
         _mark(ok["realtime_factor"])),
        ("wall time", f"{fig.wall_s:.2f} s", "", ""),
        ("units cut (whole)", f"{fig.units_cut} ({fig.units_cut - fig.bad_units})",
         f"{fig.units_expected}", _mark(ok["units_whole"])),
        ("overflows / gap samples", f"{fig.overflows} / {fig.gap_samples}", "0 / 0",
         _mark(ok["no_overflow_or_gap"])),
        ("frames pushed", f"{fig.frames_pushed}", "", ""),
        ("  delivered/skipped/dropped",
         f"{fig.frames_delivered}/{fig.frames_skipped}/{fig.frames_dropped}", "", ""),
        ("RSS after first minute", f"{fig.rss_first_minute_mb:.1f} MB", "", ""),
        ("RSS at end (growth)", f"{fig.rss_end_mb:.1f} MB ({growth})", f"<= +{slack:g} MB",
         _mark(ok["memory_flat"])),
        ("peak RSS (sampled / process max)",
         f"{fig.rss_peak_sampled_mb:.1f} / "
         + ("n/a" if fig.max_rss_mb is None else f"{fig.max_rss_mb:.1f}") + " MB", "", ""),
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    head = ("figure", "value", "target", "ok")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.minutes) and 0 < args.minutes <= 24 * 60):
        print(f"error: --minutes must be more than 0 and at most 1440, got {args.minutes}",
              file=sys.stderr)
        return 2
    if round(args.native_rate * BLOCK_SECONDS) != args.native_rate * BLOCK_SECONDS:
        print(f"error: --native-rate {args.native_rate} Hz has no whole 10 ms block",
              file=sys.stderr)
        return 2
    if not (math.isfinite(args.fps) and 0 < args.fps <= 240):
        print(f"error: --fps must be more than 0 and at most 240, got {args.fps}",
              file=sys.stderr)
        return 2
    cpu, affinity = _pin_one_core()
    try:
        fig = measure(args.minutes, args.native_rate, args.out_rate, args.unit_seconds,
                      args.fps, cpu)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    ok = verdicts(fig, args.target_rtf, args.memory_slack_mb)
    print(
        f"duetto bench timeline: {fig.simulated_s / 60:g} simulated min, "
        f"{fig.native_rate} Hz mic in 10 ms blocks, {fig.fps:g} fps 640x480, "
        f"{fig.unit_seconds:g} s units at {fig.out_rate} Hz, {fig.cpu}"
    )
    print(_table(fig, ok, args.target_rtf, args.memory_slack_mb))
    passed = all(v is not False for v in ok.values())
    print("all targets met" if passed else
          "MISSED: " + ", ".join(k for k, v in ok.items() if v is False))
    if args.json is not None:
        payload = {"figures": asdict(fig), "targets": {"realtime_factor": args.target_rtf,
                   "memory_slack_mb": args.memory_slack_mb}, "verdicts": ok, "passed": passed}
        try:
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    return 0 if passed else 1
