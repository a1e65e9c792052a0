"""`duetto bench backend` for MiniCPM-o: per-unit compute against the 1 s unit, speech included.

A conversation of `--units` 1 s units (random 16 kHz audio and a 640×360 camera frame
each) goes through the backend as the session drives it: frame and audio encoders, the
unit's prefill, the model's decision, its words, and their speech (the speech decoder's
25 codes and token2wav's window). Prints the machine, load time, the system prefix,
per-unit compute as median, p99 and max (the listening and speaking units apart, and
the speech part on its own), the speech real-time factor (compute of the speech path
per second of speech voiced), the time from each <|speak|> decision (the model opening
a turn, within its unit) to that turn's first speech samples being ready, a unit that
runs to the token limit (the longest a unit can take), and peak memory; exits non-zero
when a target is missed:

* real time: the p99 unit, speech included, is computed in under 1 s;
* speech real-time factor < 1 (speech is made faster than it plays);
* the first audio of every turn is ready within 1 s of the decision to speak (before
  the next unit is due);
* the tiny model on a CPU: median listening unit under 250 ms.

Torch runs on as many threads as a conversation gives the model (every core but one)
unless `--threads` says otherwise: on a busy machine more threads than that make the
tiny token2wav many times slower. `--model DIR` runs a checkpoint folder;
`--family minicpm-o --model tiny` builds the tiny one in a temp dir. A tiny model
speaks on the bench's schedule (app/model/minicpm_o/schedule.py, the test instrument)
so that both kinds of unit are timed; a real checkpoint decides for itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.bench.backend import _peak_mb, measure_and_report

REAL_TIME_MS = 1000.0
TINY_CPU_MS = 250.0
FIRST_AUDIO_MS = 1000.0  # within the unit: ready before the next one is due
DEFAULT_UNITS = 30
# The tiny model's turns: after the 3 forced-listen units, speak 4 s, listen 3 s, ...
TINY_RUNS = tuple((a, a + 4) for a in range(4, 400, 7))
LIMIT_UNITS = 3  # units timed at the token limit


@dataclass
class SpeechFigures:
    """The speech path's share of a run of units (from the backend's own timing)."""

    speech_ms: list[float] = field(default_factory=list)  # TTS + token2wav, per unit
    voiced_s: float = 0.0  # seconds of speech (not silence) the units yielded
    first_audio_ms: list[float] = field(default_factory=list)  # per turn, from its decision
    turns_without_audio: int = 0  # turns that yielded no speech at all

    @property
    def rtf(self) -> float:
        """Compute of the speech path per second of speech voiced."""
        spent = sum(self.speech_ms) / 1000
        return spent / self.voiced_s if self.voiced_s > 0 else float("inf")


def speech_figures(timing) -> SpeechFigures:
    """`timing`: a MiniCPMOBackend.Timing recorded over the units. A turn's first audio
    is the end of the first unit from its opening on that voiced speech, measured from
    the moment within the opening unit that the model decided to speak."""
    fig = SpeechFigures(speech_ms=[s * 1000 for s in timing.speech],
                        voiced_s=float(sum(timing.voiced)))
    opened_at: float | None = None  # the open turn's decision, not yet voiced
    for i, opened in enumerate(timing.opened):
        if opened is not None:
            if opened_at is not None:
                fig.turns_without_audio += 1
            opened_at = timing.started[i] + opened
        if opened_at is not None and timing.voiced[i] > 0:
            ready = timing.started[i] + timing.units[i]
            fig.first_audio_ms.append((ready - opened_at) * 1000)
            opened_at = None
    if opened_at is not None:
        fig.turns_without_audio += 1
    return fig


@dataclass
class MiniCPMOFigures:
    device: str
    machine: str
    model: str
    threads: int
    load_s: float
    prefix_s: float
    unit_ms: list[float]
    speaking: list[bool]
    tokens: list[int]
    encode_ms: list[float]
    speech: SpeechFigures | None  # None: the checkpoint has no speech path
    limit_ms: list[float]
    limit_tokens: int
    peak_mb: float
    tiny: bool

    def percentile(self, p: float) -> float:
        return float(np.percentile(self.unit_ms, p))

    def of(self, speaking: bool) -> list[float]:
        return [ms for ms, s in zip(self.unit_ms, self.speaking, strict=True) if s == speaking]


def machine(device: str) -> str:
    """What ran it: the CPU (model, cores, load) and, on CUDA, the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [line.split(":", 1)[1].strip() for line in info
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        load = os.getloadavg()
        text += f", load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    except OSError:
        pass
    if device.startswith("cuda"):
        import torch

        text = f"{torch.cuda.get_device_name(torch.device(device))}; {text}"
    return text


def _unit(index: int, rng: np.random.Generator):
    from app.model.contract import Unit, VideoFrame

    audio = (0.05 * rng.standard_normal(16000)).astype(np.float32)
    frame = VideoFrame(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), float(index), index)
    return Unit(index, float(index), 1.0, 16000, audio, (frame,))


def timed_units(backend, units: int, rng: np.random.Generator, cuda: bool, first: int = 0):
    """Step `units` units; per unit its wall time (ms), whether it spoke, its tokens."""
    import torch

    from app.model.contract import Control

    times, speaking, tokens = [], [], []
    for i in range(first, first + units):
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
        if tiny and not isinstance(backend.schedule, schedule.SpeakSchedule):
            # The bench's turns (not written to the folder): a tiny checkpoint's own reply
            # schedule answers the user falling quiet, which the bench's noise never does.
            backend.attach(backend.loaded, schedule.SpeakSchedule(TINY_RUNS))
        persona = Persona("bench", "You enjoy a good conversation about technology.")
        backend.start(persona)
        prefix_s = backend.timing.prefix_s
        rng = np.random.default_rng(args.seed)
        list(backend.step(_unit(0, rng), Control()))  # warm-up: allocators, first mel
        backend.start(persona)
        backend.record_timing = True
        times, speaking, tokens = timed_units(backend, units, rng, cuda)
        encode_ms = [s * 1000 for s in backend.timing.encode]
        speech = (speech_figures(backend.timing)
                  if getattr(backend.loaded, "token2wav", None) is not None else None)
        # The longest a unit can take: the model keeps talking to the token limit.
        backend.sampling = Sampling(seed=args.seed, force_listen_count=0)
        backend.attach(backend.loaded, _NeverEnds())
        backend.start(persona)
        limit_ms, _, limit_tokens = timed_units(backend, LIMIT_UNITS, rng, cuda)
        figures = MiniCPMOFigures(
            device=device, machine=machine(device), model="tiny" if built else str(folder),
            threads=torch.get_num_threads(), load_s=load_s, prefix_s=prefix_s,
            unit_ms=times, speaking=speaking, tokens=tokens, encode_ms=encode_ms,
            speech=speech, limit_ms=limit_ms,
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
    if fig.speech is not None:
        sp = fig.speech
        ok["speech real-time factor < 1"] = sp.rtf < 1.0
        ok[f"first audio < {FIRST_AUDIO_MS:.0f} ms after the decision"] = (
            bool(sp.first_audio_ms) and sp.turns_without_audio == 0
            and max(sp.first_audio_ms) < FIRST_AUDIO_MS)
    if fig.tiny and fig.device == "cpu":
        listening = fig.of(False) or fig.unit_ms
        ok[f"tiny on CPU: median listening unit < {TINY_CPU_MS:.0f} ms"] = (
            statistics.median(listening) < TINY_CPU_MS)
    return ok


def _stats(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"median {statistics.median(values):.0f} ms, p99 "
            f"{float(np.percentile(values, 99)):.0f} ms, max {max(values):.0f} ms "
            f"({len(values)})")


def report(fig: MiniCPMOFigures, ok: dict[str, bool]) -> str:
    lines = [
        f"model                          {fig.model} (minicpm-o family)",
        f"machine                        {fig.machine}",
        f"device                         {fig.device}, {fig.threads} torch threads",
        f"load                           {fig.load_s:.2f} s",
        f"system prefix                  {fig.prefix_s * 1000:.0f} ms",
        f"compute per 1 s unit           {_stats(fig.unit_ms)} units, "
        f"{sum(fig.tokens)} tokens after the prefills; speech included",
        f"  listening units              {_stats(fig.of(False))}",
        f"  speaking units               {_stats(fig.of(True))}",
        f"  of which frame+audio encoders {_stats(fig.encode_ms)}",
    ]
    if fig.speech is None:
        lines.append("speech                         none (the checkpoint has no speech path)")
    else:
        sp = fig.speech
        speaking_speech = [ms for ms, s in zip(sp.speech_ms, fig.speaking, strict=True) if s]
        missing = (f"; {sp.turns_without_audio} turn(s) voiced nothing"
                   if sp.turns_without_audio else "")
        lines += [
            f"  of which speech (TTS+token2wav) {_stats(speaking_speech)} speaking units",
            f"speech voiced                  {sp.voiced_s:.2f} s; real-time factor "
            f"{sp.rtf:.2f} (speech compute / speech voiced)",
            f"<|speak|> -> first audio       {_stats(sp.first_audio_ms)} turns{missing}",
        ]
    lines += [
        f"unit at the token limit        {_stats(fig.limit_ms)} units, {fig.limit_tokens} "
        "tokens each (not in the target)",
        f"peak memory                    {fig.peak_mb:.0f} MiB",
    ]
    lines += [f"target: {name:<42} {'yes' if v else 'NO'}" for name, v in ok.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.threads <= 0:
        # The threads a conversation gives the model (every core but one: app/flow/cpu.py),
        # so the figures are the session's.
        from app.flow.cpu import limit_model_threads

        limit_model_threads()
    return measure_and_report(args, measure, verdicts, report)
