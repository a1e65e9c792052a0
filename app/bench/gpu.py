"""`duetto bench gpu`: the full-size models on this CUDA GPU, with random weights.

For each family with a backend (today Qwen2.5-Omni, 3B and 7B) and each precision
(bf16, and 4-bit NF4 through bitsandbytes), it builds the real architecture with random
weights (no download), saves it as a checkpoint folder and loads it back through the
app's own loader (so 4-bit quantization is the very path real weights take), then
measures with `duetto bench backend`'s procedure: peak VRAM, per-unit compute (prefill
of one 1 s unit with a camera frame), time from the end of the user's turn to the first
speech, and the speech real-time factor. Prints a table and writes JSON.

Random weights do not change the cost of a forward pass; the answer length is fixed by
the benchmark (min = max tokens) so that the speech figures are comparable.

Without CUDA it refuses: there is nothing full-size to measure on a CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MODELS = {"qwen2.5-omni": ("3B", "7B")}
QUANTS = ("bf16", "nf4")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", default=["3B", "7B"], choices=["3B", "7B"])
    parser.add_argument("--quants", nargs="+", default=list(QUANTS), choices=list(QUANTS))
    parser.add_argument("--units", type=int, default=6, help="units in the user's turn")
    parser.add_argument("--answer-tokens", type=int, default=48)
    parser.add_argument("--json", metavar="FILE", type=Path, default=None,
                        help="also write the figures here (default: beside nothing, "
                             "printed only)")
    parser.add_argument("--work-dir", metavar="DIR", type=Path, default=None,
                        help="where the random checkpoints are saved (about 22 GB for 7B; "
                             "default: a temporary folder)")


@dataclass
class Row:
    family: str
    size: str
    quant: str
    vram_gib: float
    unit_ms: float
    first_speech_s: float | None
    rtf: float
    build_s: float


def no_gpu_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return ("no CUDA GPU here: `duetto bench gpu` builds the full-size 3B and 7B models and "
                "measures them on a GPU; on this machine use `duetto bench backend --model "
                "tiny` or `duetto bench duplex`")
    return None


def _save_random(size: str, folder: Path) -> None:
    """A checkpoint folder of the real architecture with random weights."""
    import torch

    from app.model.qwen_omni.sizes import build_random

    model, tokenizer = build_random(size, "cpu", torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    torch.save(dict(model.speaker_map), folder / "spk_dict.pt")
    tokenizer.save_pretrained(folder)
    del model


def _measure(folder: Path, quant: str, args: argparse.Namespace):
    import torch

    from app.bench import backend as backend_bench

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    bench_args = argparse.Namespace(
        model=str(folder), quant=quant, units=args.units, unit_ms=1000, full_size=None,
        answer_tokens=args.answer_tokens, voice="Chelsie", seed=0,
    )
    return backend_bench.measure(bench_args)


def table(rows: list[Row], device: str) -> str:
    out = [f"device: {device}",
           f"{'model':<22} {'quant':<5} {'VRAM':>8} {'unit':>8} {'1st speech':>11} "
           f"{'RTF':>6}"]
    for r in rows:
        first = "-" if r.first_speech_s is None else f"{r.first_speech_s * 1000:.0f} ms"
        out.append(f"{r.family + ' ' + r.size:<22} {r.quant:<5} {r.vram_gib:>6.1f} G "
                   f"{r.unit_ms:>5.0f} ms {first:>11} {r.rtf:>6.2f}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    reason = no_gpu_reason()
    if reason is not None:
        print(f"duetto bench gpu: {reason}", file=sys.stderr)
        return 2
    import statistics

    import torch

    from app.model.contract import BackendError

    device = torch.cuda.get_device_name(0)
    rows: list[Row] = []
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="duetto-gpu-"))
    try:
        for family, sizes in MODELS.items():
            for size in (s for s in sizes if s in args.sizes):
                folder = work / f"{family}-{size}"
                t0 = time.perf_counter()
                _save_random(size, folder)
                build_s = time.perf_counter() - t0
                for quant in args.quants:
                    try:
                        fig = _measure(folder, quant, args)
                    except BackendError as exc:
                        print(f"{family} {size} {quant}: {exc}", file=sys.stderr)
                        continue
                    rows.append(Row(family, size, quant,
                                    torch.cuda.max_memory_allocated() / 2**30,
                                    statistics.median(fig.prefill_ms), fig.first_chunk_s,
                                    fig.rtf, build_s))
                    print(table(rows[-1:], device).splitlines()[-1], flush=True)
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows, device))
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device, "rows": [asdict(r) for r in rows]},
                                        indent=1))
    return 0 if rows else 1
