"""How fast the tiny MiniCPM-o token2wav makes speech on this machine's CPU.

Writes the tiny flow and vocoder (seed 0) to a temporary folder, streams a turn of random
codes through Token2Wav as the duplex loop does (28-code windows, the rest flushed) for
each solver step count asked for, and prints the compute per second of speech, split
into the flow and the vocoder. The tiny model stands in for the real one in real-time
benchmarks, so it must be well faster than real time: the run exits non-zero when any
step count takes more than --max-rtf seconds per second of speech.

    .venv/bin/python -m scripts.minicpmo_token2wav_speed --steps 10 5 2 --seconds 10

(run from the repository root, as a module, so that this checkout's `app` is imported)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.stream import SAMPLE_RATE, Token2Wav
from app.model.minicpm_o.token2wav.tiny_flow import write_tiny_flow
from app.model.minicpm_o.token2wav.tiny_hift import write_tiny_hift


def measure(folder: Path, steps: int, seconds: float) -> dict[str, float]:
    token2wav = Token2Wav.load(folder, n_timesteps=steps)
    g = torch.Generator().manual_seed(0)
    prompt = VoicePrompt(tokens=torch.randint(0, 6561, (1, 125), generator=g, dtype=torch.int32),
                         speaker=torch.randn(1, 192, generator=g),
                         mel=torch.randn(1, 250, 80, generator=g) * 2 - 5)
    codes = torch.randint(0, 6561, (int(seconds * 25),), generator=g).tolist()
    token2wav.begin(prompt)
    spent = {"flow": 0.0, "vocoder": 0.0}
    flow_chunk, vocoder_step = token2wav.flow.inference_chunk, token2wav.vocoder.step

    def timed(name, call):
        def run(*args, **kwargs):
            start = time.perf_counter()
            result = call(*args, **kwargs)
            spent[name] += time.perf_counter() - start
            return result
        return run

    token2wav.flow.inference_chunk = timed("flow", flow_chunk)
    token2wav.vocoder.step = timed("vocoder", vocoder_step)
    start = time.perf_counter()
    samples = 0
    for unit in range(0, len(codes), 25):  # a unit's codes at a time, as the TTS gives them
        samples += token2wav.push(codes[unit:unit + 25], flush=unit == 0).shape[0]
    samples += token2wav.finish().shape[0]
    total = time.perf_counter() - start
    speech = samples / SAMPLE_RATE
    return {"speech_s": speech, "rtf": total / speech, "flow_rtf": spent["flow"] / speech,
            "vocoder_rtf": spent["vocoder"] / speech}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 5, 2, 1])
    parser.add_argument("--seconds", type=float, default=10.0, help="speech per run")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's)")
    parser.add_argument("--max-rtf", type=float, default=0.5,
                        help="fail above this many seconds of compute per second of speech")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tiny_flow(folder, seed=0)
        write_tiny_hift(folder, seed=0)
        Token2Wav.load(folder, n_timesteps=1)  # warm up imports and allocations
        for steps in args.steps:
            r = measure(folder, steps, args.seconds)
            print(f"n_timesteps {steps:2d}: {r['rtf']:.3f} s per s of speech "
                  f"(flow {r['flow_rtf']:.3f}, vocoder {r['vocoder_rtf']:.3f}) "
                  f"over {r['speech_s']:.2f} s")
            if r["rtf"] > args.max_rtf:
                missed.append(steps)
    if missed:
        print(f"MISS: slower than {args.max_rtf} s per s of speech at n_timesteps {missed}")
        return 1
    print(f"ok: every step count under {args.max_rtf} s per s of speech")
    return 0


if __name__ == "__main__":
    sys.exit(main())
