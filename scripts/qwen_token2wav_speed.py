"""How fast the tiny Qwen2.5-Omni token2wav makes speech on one core of this machine.

Builds the tiny checkpoint (seed 0) in a temporary folder, loads it as the app does (the
loader's CPU vocoder path included), streams random talker codes through VoiceStream as
an answer does (one code at a time, a chunk pulled whenever one is due, the rest at the
end) at the flow steps the tiny folder asks for, on one torch thread, and prints the
compute per second of speech, split into the DiT (flow matching) and the vocoder.

The tiny model stands in for the real one in real-time benchmarks, so its speech must be
made well faster than real time: the run exits non-zero when it takes more than
1 / --min-speedup seconds of CPU per second of speech. CPU time of this thread is what
is gated (the machine is shared; wall time is printed beside it with the load average).

    .venv/bin/python -m scripts.qwen_token2wav_speed --seconds 6 [--parts]

--parts adds one more run with every DiT pass and vocoder layer timed, to say where the
time goes (not gated: the timers cost time of their own).

(run from the repository root, as a module, so that this checkout's `app` is imported)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from app.model.contract import ModelSource, Quant
from app.model.qwen_omni import loader
from app.model.qwen_omni.tiny import build_tiny
from app.model.qwen_omni.voice import VoiceStream

SAMPLE_RATE = 24_000
CODES_PER_SECOND = 50


def measure(loaded: loader.Loaded, seconds: float, seed: int = 0) -> dict[str, float]:
    model = loaded.model
    steps = loaded.flow_steps or 10
    speaker = next(iter(model.speaker_map.values()))
    # Codes as the tiny builder's loudness calibration draws them (the last few are special).
    top = model.token2wav.config.dit_config.num_embeds - 4
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, top, (int(seconds * CODES_PER_SECOND),), generator=g)
    stream = VoiceStream(model.token2wav, speaker, num_steps=steps, seed=seed)
    spent = {"dit": 0.0, "vocoder": 0.0}

    def timed(name, call):
        def run(*args, **kwargs):
            start = time.thread_time()
            result = call(*args, **kwargs)
            spent[name] += time.thread_time() - start
            return result
        return run

    stream.decode_mel = timed("dit", stream.decode_mel)
    stream._vocode = timed("vocoder", stream._vocode)
    wall, cpu = time.perf_counter(), time.thread_time()
    samples = chunks = 0
    for code in codes.tolist():
        stream.push(code)
        if (wave := stream.pull()) is not None:
            samples += wave.size
            chunks += 1
    samples += stream.finish().size
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    speech = samples / SAMPLE_RATE
    return {"steps": steps, "speech_s": speech, "chunks": chunks + 1, "cpu_s": cpu,
            "wall_s": wall, "dit_s": spent["dit"], "vocoder_s": spent["vocoder"]}


def parts(loaded: loader.Loaded, seconds: float) -> list[str]:
    """Thread CPU per second of speech of each DiT pass and each vocoder layer kind per
    stage, from one more run with each module's forward timed."""
    t2w = loaded.model.token2wav
    vocoder, dit = t2w.code2wav_bigvgan_model, t2w.code2wav_dit_model
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    shapes: list[tuple[int, ...]] = []
    wrapped: list[tuple[torch.nn.Module, object]] = []  # and its own forward, if any

    def time_it(module: torch.nn.Module, name: str) -> None:
        forward = module.forward

        def run(*args, **kwargs):
            start = time.thread_time()
            result = forward(*args, **kwargs)
            spent[name] += time.thread_time() - start
            calls[name] += 1
            if module is dit:
                shapes.append(tuple(kwargs["hidden_states"].shape))
            return result

        wrapped.append((module, module.__dict__.get("forward")))
        spent.setdefault(name, 0.0)  # printed in the order registered
        calls.setdefault(name, 0)
        module.forward = run

    time_it(dit, "DiT pass")
    time_it(dit.input_embed.spk_encoder, "  of which the speaker encoder")
    per_stage = vocoder.num_residual_blocks
    for i, block in enumerate(vocoder.resblocks):
        stage = i // per_stage
        for conv in (*block.convs1, *block.convs2):
            time_it(conv, f"vocoder stage {stage} convolutions")
        for act in block.activations:
            time_it(act, f"vocoder stage {stage} activations")
    for up in vocoder.ups:
        time_it(up[0], "vocoder upsampling (all stages)")
    for module in (vocoder.conv_pre, vocoder.conv_post, vocoder.activation_post):
        time_it(module, "vocoder first and last layers")
    try:
        run = measure(loaded, seconds, seed=99)
    finally:  # each module gets back its forward (antialias.py and others set their own)
        for module, own in reversed(wrapped):
            if own is None:
                del module.forward
            else:
                module.forward = own
    speech = run["speech_s"]
    windows = sorted({s[1] for s in shapes})
    lines = [f"where the time goes ({speech:.1f} s of speech, ms of CPU per second of speech):",
             f"  DiT: {calls['DiT pass']} passes, batch {shapes[0][0]} (guidance doubles it), "
             f"windows of {windows} frames"]
    lines += [f"  {name:40s} {t / speech * 1000:6.1f} ms  ({calls[name]} calls)"
              for name, t in spent.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="speech per run")
    parser.add_argument("--runs", type=int, default=3, help="runs; the fastest counts")
    parser.add_argument("--parts", action="store_true",
                        help="also time each DiT pass and vocoder layer (one more run)")
    parser.add_argument("--min-speedup", type=float, default=5.0,
                        help="seconds of speech per CPU second required (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny(Path(tmp) / "tiny-qwen")
        loaded = loader.load(ModelSource(local_dir=folder), Quant.BF16, lambda *_: None,
                             device="cpu")
        measure(loaded, 1.0)  # warm-up: first calls pay for allocations and kernels
        runs = [measure(loaded, args.seconds, seed=i) for i in range(args.runs)]
        where = parts(loaded, args.seconds) if args.parts else []
    best = min(runs, key=lambda r: r["cpu_s"])
    load1 = os.getloadavg()[0]
    speedup = best["speech_s"] / best["cpu_s"]
    print(f"tiny Qwen token2wav, one thread, {best['steps']} flow steps, "
          f"{best['speech_s']:.2f} s of speech in {best['chunks']} chunks "
          f"(fastest of {args.runs}; load average {load1:.2f})")
    for r in runs:
        print(f"  cpu {r['cpu_s']:.3f} s (DiT {r['dit_s']:.3f}, vocoder {r['vocoder_s']:.3f})"
              f"  wall {r['wall_s']:.3f} s")
    per_s = best["speech_s"]
    print(f"per second of speech: DiT {best['dit_s'] / per_s * 1000:.0f} ms, vocoder "
          f"{best['vocoder_s'] / per_s * 1000:.0f} ms, all {best['cpu_s'] / per_s * 1000:.0f} ms")
    for line in where:
        print(line)
    ok = speedup >= args.min_speedup
    print(f"speech made {speedup:.1f}x faster than real time on one core "
          f"(target >= {args.min_speedup:.1f}x): {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
