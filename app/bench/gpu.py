"""`duetto bench gpu`: the full-size models on this CUDA GPU, measured against their plans.

For each family (MiniCPM-o 4.5, Qwen2.5-Omni 7B and 3B, Moshi 7B, which is also
PersonaPlex-7B's in-memory architecture) and each quantization (nf4, int8, bf16), it
loads the published architecture with random weights, through the loader's own path
(loader.load_random: the placement rule, bitsandbytes' quantization while loading, the
fit check), and measures:

* memory, from the device's own counters: the loaded weights, the load peak, the steady
  state once the conversation's context is held, and the peak while talking; each held
  against the memory plan (memory_plan.py), which must be within 10 %. The measured
  working memory (peak − steady) is printed to replace the plan's estimate;
* Qwen: per-unit prefill (a 1 s unit with a camera frame), the first audio after the
  end-of-turn decision with the answer prepared during the silence (the duplex
  controller starts it `speculate_after` into the silence and decides at
  `end_of_turn_silence`: the answer has the difference as a head start), and the speech
  real-time factor (answer time / seconds of speech);
* Moshi: the compute of each 80 ms frame (median, p99) once its context window is full;
* MiniCPM-o: with the full-size token2wav beside it (the published flow and HiFT, random
  weights made on the GPU) and a random 10 s voice prompt, the model speaks on a
  schedule (schedule.SpeakSchedule: 4 units of speech, 3 of listening); once its LLM
  window has filled and slid, the compute of each 1 s unit (vision, audio, prefill,
  decision, words and their speech), the speech part alone, the first audio after each
  <|speak|> decision, and the speech real-time factor (speech compute / speech voiced).

Targets (exit 1 on a miss): plan within 10 % of measured, for every row; Qwen 7B nf4
first audio ≤ 0.30 s after the decision and speech RTF ≤ 0.3; Moshi 7B nf4 frame p99
≤ 80 ms; MiniCPM-o nf4 median speaking unit ≤ 0.15 s and every turn's first audio
≤ 0.30 s after the decision (the issue's H100 targets). Rows that the time budget leaves
out are reported as skipped. The MiniCPM-o rows come first: they are the newest.

Without CUDA it refuses in one line (exit 2): there is nothing full-size to measure.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

GIB = 1024**3
PLAN_TOLERANCE = 0.10
QWEN_FIRST_AUDIO_S = 0.30
QWEN_RTF = 0.3
MOSHI_FRAME_P99_MS = 80.0
MINICPMO_UNIT_S = 0.15
MINICPMO_FIRST_AUDIO_S = 0.30
MINICPMO_SIZE = "4.5"  # one size: the 9.4 B model (Qwen3-8B inside)
MINICPMO_VOICE_S = 10  # the voice prompt the memory plan counts (memory.py)
MINICPMO_MAX_FILL = 60  # units at most to fill the LLM window before timing
TARGET_QUANT = "nf4"
FAMILIES = ("minicpm-o", "qwen2.5-omni", "moshi")
# Target rows first: if the time budget runs out, what is left out is the least needed.
DEFAULT_ROWS = (
    ("minicpm-o", MINICPMO_SIZE, "nf4"), ("qwen2.5-omni", "7B", "nf4"), ("moshi", "7B", "nf4"),
    ("qwen2.5-omni", "3B", "nf4"), ("minicpm-o", MINICPMO_SIZE, "int8"),
    ("qwen2.5-omni", "7B", "int8"), ("moshi", "7B", "int8"), ("qwen2.5-omni", "3B", "int8"),
    ("minicpm-o", MINICPMO_SIZE, "bf16"), ("qwen2.5-omni", "7B", "bf16"),
    ("moshi", "7B", "bf16"), ("qwen2.5-omni", "3B", "bf16"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--sizes", nargs="+", default=["7B", "3B"], choices=["7B", "3B"],
                        help="Qwen2.5-Omni sizes (Moshi has a 7B only)")
    parser.add_argument("--quants", nargs="+", default=["nf4", "int8", "bf16"],
                        choices=["nf4", "int8", "bf16"])
    parser.add_argument("--context", type=int, default=16384,
                        help="Qwen: tokens of context held for the conversation")
    parser.add_argument("--moshi-context", type=int, default=250,
                        help="Moshi: frames in its window (filled before frames are timed)")
    parser.add_argument("--units", type=int, default=4, help="Qwen: units in the user's turn")
    parser.add_argument("--answer-tokens", type=int, default=48,
                        help="Qwen: answer length (min = max: random weights)")
    parser.add_argument("--frames", type=int, default=100,
                        help="Moshi: frames timed once the window is full")
    parser.add_argument("--minicpmo-context", type=int, default=1000,
                        help="MiniCPM-o: the LLM window in tokens (filled before timing)")
    parser.add_argument("--minicpmo-units", type=int, default=14,
                        help="MiniCPM-o: 1 s units timed once the window is full")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="stop starting new rows after this many seconds")
    parser.add_argument("--json", metavar="FILE", type=Path, default=None,
                        help="also write the report here as JSON")


@dataclass
class Row:
    family: str
    size: str
    quant: str
    status: str = "ok"  # ok, error, skipped
    error: str = ""
    context: int = 0
    context_unit: str = ""
    load_s: float = 0.0
    plan: dict = field(default_factory=dict)  # GiB: weights, load, steady, total, working
    measured: dict = field(default_factory=dict)  # GiB, same keys
    deviation: dict = field(default_factory=dict)  # (plan - measured) / measured
    unit_ms: float | None = None
    first_chunk_s: float | None = None
    first_audio_after_decision_s: float | None = None
    rtf: float | None = None
    frame_ms_median: float | None = None
    frame_ms_p99: float | None = None
    unit_ms_p99: float | None = None  # MiniCPM-o: every unit, speech included
    speaking_unit_ms: float | None = None  # MiniCPM-o: median speaking unit
    listening_unit_ms: float | None = None  # MiniCPM-o: median listening unit
    speech_ms: float | None = None  # MiniCPM-o: median speech part of a speaking unit
    turns: int = 0  # MiniCPM-o: turns timed (first audio is their worst)
    targets: dict = field(default_factory=dict)  # name -> met

    @property
    def name(self) -> str:
        return f"{self.family} {self.size} {self.quant}"


def no_gpu_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return ("no CUDA GPU here: it loads the full-size models (random weights) on a GPU and "
                "holds them to their memory plans; on this machine use `duetto models plan` "
                "or `duetto bench backend --model tiny`")
    return None


# --- memory --------------------------------------------------------------------------------


class Memory:
    """The device's allocation counters, relative to what was allocated before."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        self.base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()

    def now(self) -> int:
        self.torch.cuda.synchronize()
        return self.torch.cuda.memory_allocated() - self.base

    def peak(self) -> int:
        self.torch.cuda.synchronize()
        return self.torch.cuda.max_memory_allocated() - self.base

    def reset_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats()


def _compare(row: Row, plan, weights: int, load_peak: int, steady: int, run_peak: int) -> None:
    planned = {
        "weights": plan.weights_bytes,
        "load": plan.load_bytes,
        "steady": plan.weights_bytes + plan.total("context"),
        "total": plan.total_bytes,
        "working": plan.total("working"),
    }
    measured = {
        "weights": weights,
        "load": load_peak,
        "steady": steady,
        "total": max(load_peak, run_peak),
        "working": max(0, run_peak - steady),
    }
    row.plan = {k: round(v / GIB, 4) for k, v in planned.items()}
    row.measured = {k: round(v / GIB, 4) for k, v in measured.items()}
    row.deviation = {k: round((planned[k] - measured[k]) / measured[k], 4)
                     for k in ("weights", "steady", "total") if measured[k] > 0}
    row.targets[f"plan within {PLAN_TOLERANCE:.0%} of measured (steady, peak)"] = all(
        abs(row.deviation.get(k, 1.0)) <= PLAN_TOLERANCE for k in ("steady", "total"))


# --- the families --------------------------------------------------------------------------


def _qwen(row: Row, args: argparse.Namespace) -> None:
    import torch

    from app.bench.backend import _unit
    from app.flow.duplex import DuplexConfig
    from app.model.contract import Control, Persona, Quant, Voice
    from app.model.qwen_omni import loader
    from app.model.qwen_omni.backend import QwenOmniBackend
    from app.model.qwen_omni.speech import AnswerConfig

    answer = AnswerConfig(max_answer_tokens=args.answer_tokens,
                          min_answer_tokens=args.answer_tokens,
                          min_codes=args.answer_tokens + 1)
    memory = Memory()
    t0 = time.perf_counter()
    loaded = loader.load_random(row.size, Quant(row.quant), device="cuda", context=args.context,
                                talker_headroom=answer.max_codes)
    row.load_s = time.perf_counter() - t0
    weights, load_peak = memory.now(), memory.peak()
    backend = QwenOmniBackend(token_budget=args.context, answer=answer)
    backend.attach(loaded)
    row.context, row.context_unit = loaded.plan.context, loaded.plan.context_unit
    backend.start(Persona("bench", "Answer in a few sentences.", voice=Voice(builtin="Chelsie")))
    steady = memory.now()
    memory.reset_peak()
    rng = np.random.default_rng(0)
    prefill = []
    for i in range(args.units):
        t = time.perf_counter()
        list(backend.step(_unit(i, 1000, rng), Control()))
        torch.cuda.synchronize()
        prefill.append((time.perf_counter() - t) * 1000)
    samples = 0
    t_end = time.perf_counter()  # the answer starts here (prepared during the silence)
    for out in backend.step(_unit(args.units, 1000, rng), Control(turn_ended=True)):
        if out.speech is not None:
            samples += out.speech.audio.size
    answer_s = time.perf_counter() - t_end
    run_peak = memory.peak()
    state = backend.last_answer.state
    _compare(row, loaded.plan, weights, load_peak, steady, max(run_peak, steady))
    row.unit_ms = statistics.median(prefill)
    duplex = DuplexConfig()
    head_start = duplex.end_of_turn_silence - (duplex.speculate_after or 0.0)
    if state.first_chunk_at is not None:
        row.first_chunk_s = state.first_chunk_at - t_end
        row.first_audio_after_decision_s = max(0.0, row.first_chunk_s - head_start)
    row.rtf = answer_s / (samples / 24000) if samples else float("inf")
    if row.size == "7B" and row.quant == TARGET_QUANT:
        first = row.first_audio_after_decision_s
        row.targets[f"first audio <= {QWEN_FIRST_AUDIO_S:.2f} s after the decision"] = (
            first is not None and first <= QWEN_FIRST_AUDIO_S)
        row.targets[f"speech RTF <= {QWEN_RTF}"] = row.rtf <= QWEN_RTF
    backend.close()


def _moshi(row: Row, args: argparse.Namespace) -> None:
    import torch

    from app.model.contract import Control, Persona, Quant, Unit
    from app.model.moshi import loader
    from app.model.moshi.backend import MoshiBackend

    memory = Memory()
    t0 = time.perf_counter()
    loaded = loader.load_random(Quant(row.quant), device="cuda", context=args.moshi_context)
    row.load_s = time.perf_counter() - t0
    weights, load_peak = memory.now(), memory.peak()
    row.context, row.context_unit = loaded.plan.context, loaded.plan.context_unit
    backend = MoshiBackend()
    backend.attach(loaded)
    backend.start(Persona("bench", "You enjoy a good conversation about technology."))
    rng = np.random.default_rng(0)

    def frame(i: int) -> float:
        audio = (0.05 * rng.standard_normal(1920)).astype(np.float32)
        t = time.perf_counter()
        list(backend.step(Unit(i, i * 0.08, 0.08, 24000, audio), Control()))
        torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1000

    for i in range(row.context + 5):  # fill the window: the context is then all held
        frame(i)
    steady = memory.now()
    memory.reset_peak()
    times = [frame(row.context + 5 + i) for i in range(args.frames)]
    run_peak = memory.peak()
    _compare(row, loaded.plan, weights, load_peak, steady, max(run_peak, steady))
    row.frame_ms_median = statistics.median(times)
    row.frame_ms_p99 = float(np.percentile(times, 99))
    if row.quant == TARGET_QUANT:
        row.targets[f"frame p99 <= {MOSHI_FRAME_P99_MS:.0f} ms"] = (
            row.frame_ms_p99 <= MOSHI_FRAME_P99_MS)
    backend.close()


class RandomVoices:
    """Stands in for the checkpoint's ONNX voice encoders (run once per voice, on the CPU,
    and not what is measured here): every recording gets one random voice prompt of
    `seconds`, made on the CPU as theirs is (token2wav moves it to its device)."""

    def __init__(self, seconds: int, seed: int = 0) -> None:
        import torch

        from app.model.minicpm_o.token2wav.prompt import VoicePrompt

        gen = torch.Generator().manual_seed(seed)
        codes = 25 * seconds  # 25 speech codes a second, two mel frames per code
        self.prompt = VoicePrompt(
            tokens=torch.randint(0, 6561, (1, codes), generator=gen, dtype=torch.int32),
            speaker=torch.randn(1, 192, generator=gen),
            mel=torch.randn(1, 2 * codes, 80, generator=gen) - 5.0)

    def prompt_for(self, recording: Path):
        return self.prompt


def write_noise_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A 16-bit WAV of quiet noise: the persona's recording the LLM's system prompt holds
    (written with the stdlib: the GPU machine has no soundfile)."""
    import wave

    pcm = (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def _minicpmo(row: Row, args: argparse.Namespace, *, device: str = "cuda",
              tiny: bool = False) -> None:
    """MiniCPM-o speaking (module docstring). `tiny`: the tiny architecture (LLM, speech
    decoder, flow, vocoder) instead of the published one, for tests on any `device`."""
    import tempfile

    import torch

    from app.bench.backend_minicpmo import TINY_RUNS, speech_figures, timed_units
    from app.model.contract import Persona, Quant, Voice
    from app.model.minicpm_o import loader
    from app.model.minicpm_o.backend import MiniCPMOBackend
    from app.model.minicpm_o.protocol import Window
    from app.model.minicpm_o.schedule import SpeakSchedule
    from app.model.minicpm_o.token2wav.stream import Token2Wav

    config = flow_config = hift_config = None
    if tiny:
        from app.model.minicpm_o.config import MiniCPMOConfig
        from app.model.minicpm_o.tiny import tiny_config_dict
        from app.model.minicpm_o.token2wav.tiny_flow import tiny_flow_config
        from app.model.minicpm_o.token2wav.tiny_hift import TINY_HIFT

        config = MiniCPMOConfig.from_dict(tiny_config_dict(), where="the tiny config")
        flow_config, hift_config = tiny_flow_config(), TINY_HIFT
    cuda = device.startswith("cuda")
    memory = Memory()
    t0 = time.perf_counter()
    loaded = loader.load_random(Quant(row.quant), device=device,
                                context=args.minicpmo_context, config=config)
    # The full-size vocoder, its random weights made on the device itself.
    loaded.token2wav = Token2Wav.random(flow_config, hift_config, device=device)
    loaded.voices = RandomVoices(MINICPMO_VOICE_S)
    if cuda:
        torch.cuda.synchronize()
    row.load_s = time.perf_counter() - t0
    weights, load_peak = memory.now(), memory.peak()
    row.context, row.context_unit = loaded.plan.context, loaded.plan.context_unit
    high = loaded.plan.context
    backend = MiniCPMOBackend(device=device, window=Window(high=high, low=high * 7 // 8))
    backend.attach(loaded, SpeakSchedule(TINY_RUNS))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        recording = write_noise_wav(Path(tmp) / "voice.wav", MINICPMO_VOICE_S)
        backend.start(Persona("bench", "You enjoy a good conversation about technology.",
                              voice=Voice(reference_audio=recording)))
    # Fill the window until it has slid, and stop two units into a turn: the context is
    # then all held as in a long talk, the vocoder's live cache (at its cut length after
    # two chunks) beside its turn-start one.
    filled = into_turn = 0
    slid = False
    while filled < MINICPMO_MAX_FILL:
        timed_units(backend, 1, rng, cuda, first=filled)
        filled += 1
        last = backend.results[-1]
        slid = slid or bool(last.dropped)
        into_turn = into_turn + 1 if last.speaking and last.turn_open else 0
        if slid and into_turn >= 2:
            break
    steady = memory.now()
    memory.reset_peak()
    backend.record_timing = True
    times, speaking, _ = timed_units(backend, args.minicpmo_units, rng, cuda, first=filled)
    run_peak = memory.peak()
    _compare(row, loaded.plan, weights, load_peak, steady, max(run_peak, steady))
    speech = speech_figures(backend.timing)
    spoke = [ms for ms, s in zip(times, speaking, strict=True) if s]
    heard = [ms for ms, s in zip(times, speaking, strict=True) if not s]
    row.unit_ms = statistics.median(times)
    row.unit_ms_p99 = float(np.percentile(times, 99))
    row.speaking_unit_ms = statistics.median(spoke) if spoke else None
    row.listening_unit_ms = statistics.median(heard) if heard else None
    voiced = [ms for ms, s in zip(speech.speech_ms, speaking, strict=True) if s]
    row.speech_ms = statistics.median(voiced) if voiced else None
    row.turns = len(speech.first_audio_ms) + speech.turns_without_audio
    row.first_audio_after_decision_s = (
        None if speech.turns_without_audio or not speech.first_audio_ms
        else max(speech.first_audio_ms) / 1000)
    row.rtf = speech.rtf
    if row.quant == TARGET_QUANT:
        unit = row.speaking_unit_ms
        row.targets[f"median speaking unit <= {MINICPMO_UNIT_S:.2f} s"] = (
            unit is not None and unit / 1000 <= MINICPMO_UNIT_S)
        first = row.first_audio_after_decision_s
        row.targets[f"first audio <= {MINICPMO_FIRST_AUDIO_S:.2f} s after the decision"] = (
            first is not None and first <= MINICPMO_FIRST_AUDIO_S)
    backend.close()


# --- the report ----------------------------------------------------------------------------


def _line(r: Row) -> str:
    if r.status != "ok":
        return f"{r.name:<24} {r.status}: {r.error}"
    if r.family == "qwen2.5-omni":
        speed = (f"unit {r.unit_ms:.0f} ms, 1st audio +{r.first_audio_after_decision_s or 0:.2f}"
                 f" s after the decision ({r.first_chunk_s or 0:.2f} s after the start), "
                 f"RTF {r.rtf:.2f}")
    elif r.family == "minicpm-o":
        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.0f} ms"

        first = r.first_audio_after_decision_s
        speed = (f"unit median {r.unit_ms:.0f} ms, p99 {r.unit_ms_p99:.0f} ms (speaking "
                 f"{ms(r.speaking_unit_ms)}, of which speech {ms(r.speech_ms)}; listening "
                 f"{ms(r.listening_unit_ms)}); 1st audio "
                 f"{'n/a' if first is None else f'{first:.2f} s'} after the decision "
                 f"(worst of {r.turns} turns); speech RTF {r.rtf:.2f}")
    else:
        speed = f"frame median {r.frame_ms_median:.1f} ms, p99 {r.frame_ms_p99:.1f} ms"
    mem = (f"plan {r.plan['total']:.2f} / measured {r.measured['total']:.2f} GiB "
           f"({r.deviation.get('total', 0):+.1%}); steady {r.plan['steady']:.2f} / "
           f"{r.measured['steady']:.2f} ({r.deviation.get('steady', 0):+.1%}); working "
           f"measured {r.measured['working']:.2f} (planned {r.plan['working']:.2f})")
    verdict = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r.targets.items())
    return (f"{r.name:<24} {r.context} {r.context_unit}, load {r.load_s:.0f} s\n"
            f"{'':<24} {mem}\n{'':<24} {speed}\n{'':<24} {verdict}")


def run(args: argparse.Namespace) -> int:
    reason = no_gpu_reason()
    if reason is not None:
        print(f"duetto bench gpu: {reason}", file=sys.stderr)
        return 2
    import torch

    rows = [Row(f, s, q) for f, s, q in DEFAULT_ROWS
            if f in args.families and q in args.quants and (f != "qwen2.5-omni"
                                                            or s in args.sizes)]
    device = torch.cuda.get_device_name(0)
    print(f"device: {device}; torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    for row in rows:
        if time.perf_counter() - start > args.budget_s:
            row.status, row.error = "skipped", f"time budget of {args.budget_s:.0f} s spent"
            print(_line(row), flush=True)
            continue
        try:
            {"qwen2.5-omni": _qwen, "moshi": _moshi, "minicpm-o": _minicpmo}[row.family](
                row, args)
        except Exception as exc:  # one row failing must not hide the others' figures
            row.status, row.error = "error", f"{type(exc).__name__}: {exc}"
            row.targets["ran"] = False
            traceback.print_exc(file=sys.stderr)
        finally:
            gc.collect()
            torch.cuda.empty_cache()
        print(_line(row), flush=True)
    missed = [f"{r.name}: {k}" for r in rows for k, v in r.targets.items() if not v]
    ok = not missed
    report = {"device": device, "torch": torch.__version__, "ok": ok, "missed": missed,
              "elapsed_s": round(time.perf_counter() - start, 1),
              "rows": [asdict(r) for r in rows]}
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    print("all targets met" if ok else "targets missed:\n  " + "\n  ".join(missed))
    return 0 if ok else 1
