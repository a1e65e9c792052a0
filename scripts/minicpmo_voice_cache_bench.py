"""How much faster a conversation start gets its MiniCPM-o voice prompt the second time.

First start: no cache file; the voice encoders are loaded (onnxruntime), their files
hashed, the recording encoded, the cache file written beside it. Second start: new
objects, as a new process would make them; the prompt read back from that file. Each
start is timed alone, `--rounds` times; the medians are printed with their ratio, and
the command exits 1 when the ratio is under `--min-speedup` (10 by default).

    .venv/bin/python scripts/minicpmo_voice_cache_bench.py                  # tiny encoders
    .venv/bin/python scripts/minicpmo_voice_cache_bench.py \\
        --encoders CHECKPOINT/assets/token2wav --recording my_voice.wav    # the real ones
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _recording(folder: Path, seconds: float) -> Path:
    """A speech-like 16 kHz PCM_16 recording (the persona page records 16 kHz)."""
    import soundfile

    rate = 16_000
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(170.0 * (1 + 0.2 * np.sin(2 * np.pi * 0.5 * t))) / rate
    wave = 0.2 * sum(np.sin(k * phase) / k for k in (1, 2, 3, 5))
    wave *= 0.4 + 0.6 * np.sin(2 * np.pi * 3.0 * t) ** 2
    path = folder / "voice.wav"
    soundfile.write(str(path), wave.astype(np.float32), rate, subtype="PCM_16")
    return path


def main() -> int:
    from app.model.minicpm_o.token2wav.tiny_voice import write_tiny_voice_encoders
    from app.model.minicpm_o.token2wav.voice_cache import VoiceCache
    from app.model.minicpm_o.token2wav.voice_encoders import VoiceEncoders

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", type=Path,
                        help="a token2wav folder with the two ONNX encoders (default: tiny "
                             "ones written to a temporary folder)")
    parser.add_argument("--recording", type=Path,
                        help="a voice recording (default: 10 s of generated speech-like audio)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-speedup", type=float, default=10.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="duetto-voice-bench-"))
    encoders = args.encoders or write_tiny_voice_encoders(work / "token2wav", seed=0)
    source = args.recording or _recording(work, 10.0)
    recording = work / ("copy-" + source.name)  # the cache goes beside it: not the user's file
    recording.write_bytes(source.read_bytes())

    firsts, seconds = [], []
    for _ in range(args.rounds):
        VoiceCache.beside(recording).unlink(missing_ok=True)
        t0 = time.perf_counter()
        first = VoiceCache(VoiceEncoders(encoders))
        computed = first.prompt_for(recording)
        t1 = time.perf_counter()
        second = VoiceCache(VoiceEncoders(encoders))
        cached = second.prompt_for(recording)
        t2 = time.perf_counter()
        if (first.last_source, second.last_source) != ("computed", "cache"):
            print(f"unexpected sources: {first.last_source}, {second.last_source}")
            return 1
        same = all(a.equal(b) for a, b in ((computed.tokens, cached.tokens),
                                           (computed.speaker, cached.speaker),
                                           (computed.mel, cached.mel)))
        if not same:
            print("the cached prompt differs from the computed one")
            return 1
        firsts.append(t1 - t0)
        seconds.append(t2 - t1)
    first_s, second_s = statistics.median(firsts), statistics.median(seconds)
    ratio = first_s / second_s
    print(f"encoders: {'tiny (write_tiny_voice_encoders)' if args.encoders is None else encoders}")
    print(f"recording: {source} ({computed.tokens.shape[1]} speech codes)")
    print(f"first start (encode + write): {first_s * 1000:.1f} ms  (rounds: "
          + ", ".join(f"{x * 1000:.1f}" for x in firsts) + ")")
    print(f"second start (from the cache): {second_s * 1000:.1f} ms  (rounds: "
          + ", ".join(f"{x * 1000:.1f}" for x in seconds) + ")")
    print(f"speed-up: {ratio:.1f}x (required: >= {args.min_speedup:g}x)")
    return 0 if ratio >= args.min_speedup else 1


if __name__ == "__main__":
    sys.exit(main())
