"""`duetto bench backend` for MiniCPM-o: per-unit compute against the 1 s unit.

A conversation of `--units` 1 s units (random 16 kHz audio and a 640×360 camera frame
each) goes through the backend as the session drives it: frame and audio encoders, the
unit's prefill, the model's decision and its words. Prints load time, the system
prefix, per-unit compute as median, p99 and max (and the listening and speaking units
apart), a unit that runs to the token limit (the longest a unit can take), and peak
memory; exits non-zero when a target is missed:

* real time: the p99 unit is computed in under 1 s (the model never falls behind);
* the tiny model on a CPU: median unit under 250 ms.

Torch runs on as many threads as a conversation gives the model (every core but one)
unless `--threads` says otherwise. `--model DIR` runs a checkpoint folder;
`--family minicpm-o --model tiny` builds the tiny one in a temp dir. A tiny model
speaks on a schedule (app/model/minicpm_o/schedule.py, the test instrument) so that
both kinds of unit are timed; a real checkpoint decides for itself.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.bench.backend import _peak_mb, measure_and_report

REAL_TIME_MS = 1000.0
TINY_CPU_MS = 250.0
DEFAULT_UNITS = 30
# The tiny model's turns: after the 3 forced-listen units, speak 4 s, listen 3 s, ...
TINY_RUNS = tuple((a, a + 4) for a in range(4, 400, 7))
LIMIT_UNITS = 3  # units timed at the token limit


@dataclass
class MiniCPMOFigures:
    device: str
    model: str
    threads: int
    load_s: float
    prefix_s: float
    unit_ms: list[float]
    speaking: list[bool]
    tokens: list[int]
    encode_ms: list[float]
    limit_ms: list[float]
    limit_tokens: int
    peak_mb: float
    tiny: bool

    def percentile(self, p: float) -> float:
        return float(np.percentile(self.unit_ms, p))

    def of(self, speaking: bool) -> list[float]:
        return [ms for ms, s in zip(self.unit_ms, self.speaking, strict=True) if s == speaking]


def _unit(index: int, rng: np.random.Generator):
    from app.model.contract import Unit, VideoFrame

    audio = (0.05 * rng.standard_normal(16000)).astype(np.float32)
    frame = VideoFrame(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), float(index), index)
    return Unit(index, float(index), 1.0, 16000, audio, (frame,))


def _timed(backend, units: int, rng: np.random.Generator, cuda: bool):
    import torch

    from app.model.contract import Control

    times, speaking, tokens = [], [], []
    for i in range(units):
        unit = _unit(i, rng)
        t = time.perf_counter()
        list(backend.step(unit, Control()))
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
        result = backend.results[-1]
        speaking.append(result.speaking)
        tokens.append(len(result.tokens))
    return times, speaking, tokens


def measure(args: argparse.Namespace) -> MiniCPMOFigures:
    import torch

    from app.model.contract import BackendError, Control, ModelSource, Persona, Quant
    from app.model.minicpm_o import schedule
    from app.model.minicpm_o.backend import MiniCPMOBackend
    from app.model.minicpm_o.duplex import Sampling
    from app.model.minicpm_o.tiny import build_tiny

    units = args.units or DEFAULT_UNITS
    if units < 1:
        raise BackendError("--units must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        built = args.model == "tiny"
        if built:
            build_tiny(Path(tmp) / "tiny", seed=args.seed)  # before the clock starts
        elif not args.model:
            raise BackendError("no model given",
                               hint="--model DIR, or --family minicpm-o --model tiny")
        folder = Path(tmp) / "tiny" if built else Path(args.model).expanduser()
        tiny = built or schedule.is_tiny(folder)
        backend = MiniCPMOBackend(sampling=Sampling(seed=args.seed))
        t0 = time.perf_counter()
        backend.load(ModelSource(local_dir=folder), Quant(args.quant), lambda *_: None)
        device = str(backend.decoder.device)
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
        load_s = time.perf_counter() - t0
        if tiny and backend.schedule is None:
            # A tiny folder without turns of its own gets the bench's (not written to it).
            backend.attach(backend.loaded, schedule.SpeakSchedule(TINY_RUNS))
        persona = Persona("bench", "You enjoy a good conversation about technology.")
        backend.start(persona)
        prefix_s = backend.timing.prefix_s
        rng = np.random.default_rng(args.seed)
        list(backend.step(_unit(0, rng), Control()))  # warm-up: allocators, first mel
        backend.start(persona)
        backend.record_timing = True
        times, speaking, tokens = _timed(backend, units, rng, cuda)
        encode_ms = [s * 1000 for s in backend.timing.encode]
        # The longest a unit can take: the model keeps talking to the token limit.
        backend.sampling = Sampling(seed=args.seed, force_listen_count=0)
        backend.attach(backend.loaded, _NeverEnds())
        backend.start(persona)
        limit_ms, _, limit_tokens = _timed(backend, LIMIT_UNITS, rng, cuda)
        figures = MiniCPMOFigures(
            device=device, model="tiny" if built else str(folder),
            threads=torch.get_num_threads(), load_s=load_s, prefix_s=prefix_s,
            unit_ms=times, speaking=speaking, tokens=tokens, encode_ms=encode_ms,
            limit_ms=limit_ms,
            limit_tokens=max(limit_tokens), peak_mb=_peak_mb(device), tiny=tiny)
        backend.close()
        return figures


class _NeverEnds:
    """A steer for the token-limit measure: every terminator and turn end held down."""

    def steer(self, ids, tokenizer):
        held = {ids.listen: -1e4, ids.chunk_eos: -1e4, ids.chunk_tts_eos: -1e4,
                ids.turn_eos: -1e4}
        return lambda unit, j, turn_open: held


def verdicts(fig: MiniCPMOFigures) -> dict[str, bool]:
    ok = {f"p99 unit < {REAL_TIME_MS:.0f} ms (real time)": fig.percentile(99) < REAL_TIME_MS}
    if fig.tiny and fig.device == "cpu":
        ok[f"tiny on CPU: median unit < {TINY_CPU_MS:.0f} ms"] = (
            statistics.median(fig.unit_ms) < TINY_CPU_MS)
    return ok


def _stats(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms "
            f"({len(values)} units)")


def report(fig: MiniCPMOFigures, ok: dict[str, bool]) -> str:
    lines = [
        f"model                          {fig.model} (minicpm-o family)",
        f"device                         {fig.device}, {fig.threads} torch threads",
        f"load                           {fig.load_s:.2f} s",
        f"system prefix                  {fig.prefix_s * 1000:.0f} ms",
        f"compute per 1 s unit           median {statistics.median(fig.unit_ms):.0f} ms, "
        f"p99 {fig.percentile(99):.0f} ms, max {max(fig.unit_ms):.0f} ms "
        f"({len(fig.unit_ms)} units, {sum(fig.tokens)} tokens after the prefills)",
        f"  listening units              {_stats(fig.of(False))}",
        f"  speaking units               {_stats(fig.of(True))}",
        f"  of which frame+audio encoders {_stats(fig.encode_ms)}",
        f"unit at the token limit        {_stats(fig.limit_ms)}, {fig.limit_tokens} tokens "
        "each (not in the target)",
        f"peak memory                    {fig.peak_mb:.0f} MiB",
    ]
    lines += [f"target: {name:<38} {'yes' if v else 'NO'}" for name, v in ok.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.threads <= 0:
        # The threads a conversation gives the model (every core but one: app/flow/cpu.py),
        # so the figures are the session's.
        from app.flow.cpu import limit_model_threads

        limit_model_threads()
    return measure_and_report(args, measure, verdicts, report)
