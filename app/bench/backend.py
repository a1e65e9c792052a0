"""`duetto bench backend`: the Qwen2.5-Omni backend's latency figures on this machine.

Prints load time, median per-unit prefill time, end-of-turn → first speech chunk,
the speech real-time factor (answer wall time / seconds of speech produced) and peak
memory, and exits non-zero when a target is missed:

* the first speech chunk comes before the thinker has finished its answer
  (streaming, not the library's all-at-the-end generate);
* speech is produced faster than it plays (real-time factor < 1).

`--model DIR` runs a checkpoint folder (the tiny model: `--model tiny` builds one in a
temp dir). `--full-size 3B|7B` runs the real architecture with random weights on a
CUDA GPU (no download), in any quantization, loaded through the loader's own path, so
the same figures can be measured on the target hardware.

A Moshi/PersonaPlex folder (or `--family moshi`) runs app/bench/backend_moshi.py instead:
per-frame compute against the 80 ms clock. A MiniCPM-o folder (or `--family minicpm-o`)
runs app/bench/backend_minicpmo.py: per-unit compute against the 1 s unit.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MB = 1024 * 1024


@dataclass
class Figures:
    device: str
    load_s: float
    prefill_ms: list[float]
    first_chunk_s: float | None
    thinker_done_s: float | None
    answer_s: float
    speech_s: float
    tokens: int
    codes: int
    chunks: int
    peak_mb: float

    @property
    def rtf(self) -> float:
        return self.answer_s / self.speech_s if self.speech_s > 0 else float("inf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="checkpoint folder, or 'tiny' to build the tiny random model")
    parser.add_argument("--quant", default="bf16", choices=["bf16", "fp16", "int8", "nf4"])
    parser.add_argument("--units", type=int, default=None,
                        help="units in the user's turn (default 6); minicpm-o: units of "
                        "the timed conversation (default 30)")
    parser.add_argument("--unit-ms", type=int, default=1000)
    parser.add_argument("--full-size", choices=["3B", "7B"], default=None,
                        help="real architecture with random weights (CUDA only)")
    parser.add_argument("--answer-tokens", type=int, default=48,
                        help="answer length the benchmark asks for (min = max)")
    parser.add_argument("--voice", default="Chelsie")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", default="auto",
                        choices=["auto", "qwen2.5-omni", "moshi", "minicpm-o"],
                        help="model family (auto: from the --model folder; 'tiny' is Qwen's)")
    parser.add_argument("--frames", type=int, default=100,
                        help="moshi: 80 ms frames to time after 5 warm-up frames")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's own); 1 avoids threads "
                        "spinning against each other on a busy CPU")


def _family(args: argparse.Namespace) -> str:
    """The family to benchmark: --family, else what the --model folder holds."""
    if args.family != "auto":
        return args.family
    if args.model and args.model != "tiny" and not args.full_size:
        from app.model import families
        from app.model.contract import BackendError

        try:
            return families.of_folder(Path(args.model))
        except BackendError:
            pass  # Qwen's loader explains what is wrong with the folder
    return "qwen2.5-omni"


def _unit(index: int, unit_ms: int, rng: np.random.Generator):
    from app.model.contract import Unit, VideoFrame

    n = 16 * unit_ms
    audio = (0.1 * rng.standard_normal(n)).astype(np.float32)
    pixels = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    frame = VideoFrame(pixels=pixels, t=index * unit_ms / 1000, seq=index)
    return Unit(index, index * unit_ms / 1000, unit_ms / 1000, 16000, audio, (frame,))


def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / MB
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def _make_backend(args: argparse.Namespace, tmp: Path):
    import torch

    from app.model.contract import BackendError, ModelSource, Quant
    from app.model.qwen_omni import loader
    from app.model.qwen_omni.backend import QwenOmniBackend
    from app.model.qwen_omni.speech import AnswerConfig

    config = AnswerConfig(
        max_answer_tokens=args.answer_tokens,
        min_answer_tokens=args.answer_tokens,
        min_codes=args.answer_tokens + 1,
        seed=args.seed,
    )
    backend = QwenOmniBackend(unit_ms=args.unit_ms, answer=config)
    quant = Quant(args.quant)
    if args.full_size:
        if not torch.cuda.is_available():
            raise BackendError(
                f"--full-size {args.full_size} builds a {args.full_size} model with random "
                "weights and needs a CUDA GPU; this machine has none",
                hint="run it on a GPU machine, or benchmark --model tiny here",
            )
        # The published architecture, random weights made on the GPU, loaded and
        # quantized through the loader's own path.
        backend.attach(loader.load_random(args.full_size, quant, device="cuda",
                                          talker_headroom=config.max_codes))
        return backend, "cuda"
    if not args.model:
        raise BackendError("no model given", hint="--model DIR, --model tiny or --full-size")
    folder = tmp / "tiny" if args.model == "tiny" else Path(args.model)
    backend.load(ModelSource(local_dir=folder), quant, lambda what, frac: None)
    return backend, str(backend._loaded.device)


def measure(args: argparse.Namespace) -> Figures:
    import torch

    from app.model.contract import Control, Persona, Voice

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny" and not args.full_size:
            from app.model.qwen_omni.tiny import build_tiny

            # Built before the clock starts: load time is loading, not building.
            build_tiny(Path(tmp) / "tiny", min_answer_tokens=args.answer_tokens, seed=args.seed)
        t0 = time.perf_counter()
        backend, device = _make_backend(args, Path(tmp))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        load_s = time.perf_counter() - t0
        backend.start(Persona("bench", "Answer in a few sentences.",
                              voice=Voice(builtin=args.voice)))
        rng = np.random.default_rng(args.seed)
        prefill = []
        for i in range(args.units):
            unit = _unit(i, args.unit_ms, rng)
            t = time.perf_counter()
            list(backend.step(unit, Control()))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            prefill.append((time.perf_counter() - t) * 1000)
        last = _unit(args.units, args.unit_ms, rng)
        t_end = time.perf_counter()  # the user's turn ends with this unit
        samples = 0
        for out in backend.step(last, Control(turn_ended=True)):
            if out.speech is not None:
                samples += out.speech.audio.size
        answer_s = time.perf_counter() - t_end
        state = backend.last_answer.state
        fig = Figures(
            device=device,
            load_s=load_s,
            prefill_ms=prefill,
            first_chunk_s=None if state.first_chunk_at is None else state.first_chunk_at - t_end,
            thinker_done_s=(None if state.thinker_done_at is None
                            else state.thinker_done_at - t_end),
            answer_s=answer_s,
            speech_s=samples / 24000,
            tokens=len(state.token_ids),
            codes=state.codes,
            chunks=state.chunks,
            peak_mb=_peak_mb(device),
        )
        backend.close()
        return fig


def verdicts(fig: Figures) -> dict[str, bool]:
    streamed = (
        fig.first_chunk_s is not None
        and fig.thinker_done_s is not None
        and fig.first_chunk_s < fig.thinker_done_s
    )
    return {"first speech before the thinker finished": streamed,
            "speech real-time factor < 1": fig.rtf < 1.0}


def report(fig: Figures, ok: dict[str, bool]) -> str:
    def s(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 1000:.0f} ms"

    lines = [
        f"device                         {fig.device}",
        f"load                           {fig.load_s:.2f} s",
        f"prefill per unit (median)      {statistics.median(fig.prefill_ms):.1f} ms "
        f"(max {max(fig.prefill_ms):.1f} ms, {len(fig.prefill_ms)} units)",
        f"end of turn -> first speech    {s(fig.first_chunk_s)}",
        f"end of turn -> thinker done    {s(fig.thinker_done_s)} ({fig.tokens} tokens)",
        f"speech produced                {fig.speech_s:.2f} s in {fig.chunks} chunks "
        f"({fig.codes} codes) over {fig.answer_s:.2f} s",
        f"speech real-time factor        {fig.rtf:.2f}",
        f"peak memory                    {fig.peak_mb:.0f} MiB",
    ]
    lines += [f"target: {name:<38} {'yes' if v else 'NO'}" for name, v in ok.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    family = _family(args)
    if family == "moshi":
        from app.bench import backend_moshi

        return backend_moshi.run(args)
    if family == "minicpm-o":
        from app.bench import backend_minicpmo

        return backend_minicpmo.run(args)
    if args.units is None:
        args.units = 6
    if args.units < 1 or args.answer_tokens < 1:
        print("--units and --answer-tokens must be at least 1", file=sys.stderr)
        return 2
    # bitsandbytes' int8 matmul on CPU logs on every call that it casts to fp16.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    return measure_and_report(args, measure, verdicts, report)


def measure_and_report(args: argparse.Namespace, measure, verdicts, report) -> int:
    """Measure, print the report; 2 when the backend refuses, 1 when a target is missed."""
    from app.model.contract import BackendError

    try:
        fig = measure(args)
    except BackendError as exc:
        print(f"duetto bench backend: {exc}", file=sys.stderr)
        return 2
    ok = verdicts(fig)
    print(report(fig, ok))
    return 0 if all(ok.values()) else 1

