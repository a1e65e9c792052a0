"""`duetto bench duplex`: scripted conversations through the whole app, scored.

Each scenario (app/bench/scenarios/*.toml, see duplex_scenario.py) runs in real time
through the real path: a VirtualRoom is the microphone and the speaker on one clock,
feeding the session's timeline; the session runs voice activity, echo cancellation,
the duplex controller and the backend, and plays into the room through the player. The
session's own recorder writes the stereo WAV and the event log; beside them this
benchmark writes `user.wav` (the user's clean voice on the same clock), `task.json`
(where each line was spoken and what it expected) and `score.json`. Then the run's
table (results.txt) and figures (results.json) go into the output folder, and the
command exits 1 when a target of the issue is missed.

`--rescore DIR` scores saved runs again without running anything.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from app.bench import scoring
from app.bench.duplex_report import table
from app.bench.duplex_scenario import SETS, Scenario, ScenarioError, builtin_dir, load_dir

TASK_FILE = "task.json"
SCORE_FILE = "score.json"
USER_FILE = "user.wav"
RESULTS_JSON = "results.json"
RESULTS_TXT = "results.txt"
DEFAULT_END_OF_TURN = 0.6  # DuplexConfig's default; read from it at run time
TURN_MODEL_COMPUTE = 0.15  # the end-of-turn model's compute budget (app/bench/turn.py)
# The tiny model's answers: about 3 s of speech (150 codes) on 10 text tokens, a real
# answer's ratio (50 codes and 3.3 tokens a second); its random weights would stop at once.
ANSWER_TOKENS = 10
ANSWER_CODES = 150


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", metavar="MODEL_DIR|ws://HOST:PORT", default=None,
                        help="a checkpoint folder of any supported family (Qwen2.5-Omni, "
                             "Moshi/PersonaPlex), or a duplex server's address (`duetto "
                             "serve`, vLLM-Omni); default: build the tiny random Qwen2.5-Omni")
    parser.add_argument("--token", default=None,
                        help="the server's token, with a ws:// --backend (default: "
                             "$DUETTO_SERVER_TOKEN)")
    parser.add_argument("--quant", default="bf16", choices=["bf16", "fp16", "int8", "nf4"])
    parser.add_argument("--scenarios", metavar="DIR", type=Path, default=None,
                        help="folder of scenario files (default: the built-in set)")
    parser.add_argument("--set", dest="scenario_set", choices=SETS, default="default",
                        help="which built-in set, without --scenarios: the default 30 "
                             "scenarios, or the hard ones (other voices and speeds, "
                             "quieter talkers, louder noise, stronger echo, photographs)")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="run only these scenarios (names or shell patterns, e.g. "
                             "'interrupt_*'); may name scenarios outside the default set")
    parser.add_argument("--long", action="store_true",
                        help="also run the scenarios kept out of the default set (long ones)")
    parser.add_argument("--out", metavar="DIR", type=Path, default=None,
                        help="where recordings and results go (default: a new folder under "
                             "the app's data folder)")
    parser.add_argument("--rescore", metavar="DIR", type=Path, default=None,
                        help="score the saved runs under DIR again; runs nothing")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--unit-ms", type=int, default=None,
                        help="the backend's unit length (default: the family's own; "
                             "Qwen2.5-Omni 1000, Moshi 80)")
    parser.add_argument("--answer-tokens", type=int, default=ANSWER_TOKENS,
                        help="tiny model only: minimum answer length in text tokens")
    parser.add_argument("--answer-codes", type=int, default=ANSWER_CODES,
                        help="tiny model only: minimum answer length in speech codes (50 a "
                             "second: 150 is 3 s of speech)")
    parser.add_argument("--end-of-turn-silence", type=float, default=None,
                        help="override the duplex controller's end-of-turn silence (s); "
                             "with the end-of-turn model, its cap")
    parser.add_argument("--no-turn-model", action="store_true",
                        help="end turns on silence alone, without the end-of-turn model")
    parser.add_argument("--room-rate", type=int, default=48000,
                        help="the simulated sound card's rate (Hz)")


# ----------------------------------------------------------------------- selection
def select(scenarios: list[Scenario], only: list[str] | None, include_long: bool
           ) -> list[Scenario]:
    if only:
        chosen = [s for s in scenarios if any(fnmatch.fnmatchcase(s.name, p) for p in only)]
        unknown = [p for p in only
                   if not any(fnmatch.fnmatchcase(s.name, p) for s in scenarios)]
        if unknown:
            raise ScenarioError(f"no scenario matches {', '.join(unknown)}")
        return chosen
    return [s for s in scenarios if s.default or include_long]


# ----------------------------------------------------------------------- backend
@dataclass
class Backend:
    backend: Any
    description: str


def make_backend(args: argparse.Namespace, tmp: Path) -> Backend:
    """The backend of `--backend`'s family (detected from the folder), loaded."""
    from app.flow.conversation import ConversationOptions, load_backend
    from app.model import families
    from app.model.contract import ModelSource, Persona, Quant

    if args.backend and "://" in args.backend:
        return _remote_backend(args)
    if args.backend:
        folder = Path(args.backend)
        family = families.of_folder(folder)
        description = f"{folder.name} ({family}, {args.quant})"
    else:
        from app.model.qwen_omni.tiny import build_tiny

        family = "qwen2.5-omni"
        folder = build_tiny(tmp / "tiny", min_answer_tokens=args.answer_tokens,
                            answer_codes=args.answer_codes)
        description = (f"tiny Qwen2.5-Omni, random weights, answers of {args.answer_tokens}+ "
                       f"tokens and {args.answer_codes / 50:g}+ s of speech")
    options = ConversationOptions(model=ModelSource(local_dir=folder),
                                  persona=Persona("bench", ""), family=family,
                                  quant=Quant(args.quant), unit_ms=args.unit_ms)
    backend = load_backend(options, lambda what, frac: None)
    return Backend(backend, description)


def _remote_backend(args: argparse.Namespace) -> Backend:
    """A model behind a duplex server, through the remote backend (the network included)."""
    import os

    from app.flow.conversation import ConversationOptions, load_backend
    from app.model.contract import ModelSource, Persona, Quant

    token = getattr(args, "token", None) or os.environ.get("DUETTO_SERVER_TOKEN") or None
    options = ConversationOptions(model=ModelSource(), persona=Persona("bench", ""),
                                  family="remote", quant=Quant(args.quant),
                                  backend_options={"address": args.backend, "token": token})
    backend = load_backend(options, lambda what, frac: None)
    return Backend(backend, f"{args.backend}: {backend.describe()}")


def hop_figures(backend: Any) -> dict[str, float] | None:
    """What the network hop added to each answer (ms): a remote backend's only."""
    hops = list(getattr(backend, "hops_ms", ()))
    if not hops:
        return None
    return {"count": len(hops), "median_ms": round(float(np.median(hops)), 2),
            "p90_ms": round(float(np.percentile(hops, 90)), 2)}


# ----------------------------------------------------------------------- one scenario
def run_scenario(scenario: Scenario, backend: Any, out: Path, args: argparse.Namespace,
                 speech) -> dict[str, Any]:
    """Run one scenario in real time; returns its score (also saved beside the recording)."""
    from app.bench.duplex_media import HandheldPhoto, SceneSource, noise_track
    from app.bench.duplex_user import ScriptedUser, resample
    from app.flow.player import Player
    from app.flow.resample import StreamResampler
    from app.flow.session import Session, SessionConfig
    from app.flow.virtual_room import VirtualRoom
    from app.model.contract import Persona

    rate = args.room_rate
    user = ScriptedUser(scenario, speech, rate)
    eot = args.end_of_turn_silence or scenario.end_of_turn_silence
    judge, duplex, wait = _turn_taking(eot, not getattr(args, "no_turn_model", False))
    echo = scenario.echo
    config = SessionConfig(
        duplex=duplex,
        echo_cancellation=echo.cancellation if echo else True,
        record_dir=out / scenario.name,
    )
    player = Player(rate, resampler_factory=StreamResampler)
    persona = Persona("bench", "You are a helpful assistant. Answer in a few sentences.")
    words = _burst_kind() if not getattr(args, "no_turn_model", False) else None
    session = Session(backend, player, persona, config, turn_judge=judge, burst_kind=words)
    background = (noise_track(scenario.noise, rate, user.longest_seconds() + 5, speech)
                  if scenario.noise else np.zeros(0, np.float32))
    room = VirtualRoom(
        session.timeline, player.callback, background, user_rate=rate, rate=rate,
        block=rate // 100, echo_gain=echo.gain if echo else 0.0,
        echo_delay=echo.delay if echo else 0.0, until_stopped=True, keep_seconds=30.0,
        on_event=session.on_source_event, name=f"room:{scenario.name}",
    )
    session.attach(room)
    if scenario.video is not None:
        if scenario.video.file is not None:
            from app.capture.files import FileVideoSource

            session.attach(FileVideoSource(scenario.video.file, session.timeline, loop=True,
                                           on_event=session.on_source_event))
        elif scenario.video.photo is not None:
            session.attach(SceneSource(session.timeline, HandheldPhoto(scenario.video.photo),
                                       scenario.video.fps))
        else:
            session.attach(SceneSource(session.timeline, scenario.video.scene,
                                       scenario.video.fps))
    started = time.monotonic()
    memory = MemorySampler()
    session.start()
    memory.start()
    try:
        user.run(room)
    finally:
        user.stop()
        memory.stop()
        session.stop("end of scenario")
    wall = time.monotonic() - started
    folder = session.recorder.folder if session.recorder else out / scenario.name
    stereo, rec_rate = soundfile.read(str(folder / "conversation.wav"), dtype="float32",
                                      always_2d=True)
    clean = resample(user.clean_track(round(len(stereo) * rate / rec_rate) + rate), rate,
                     rec_rate)[: len(stereo)]
    soundfile.write(str(folder / USER_FILE), clean, rec_rate, subtype="PCM_16")
    task = {
        "scenario": scenario.name,
        "category": scenario.category,
        "description": scenario.description,
        "end_of_turn_silence": duplex.end_of_turn_silence,
        "end_of_turn_model": judge.detector is not None,
        # What the turn-taking gates allow for the end of a turn (see _turn_taking).
        "end_of_turn_wait": wait,
        "wall_seconds": round(wall, 2),
        "memory_mb": memory.samples,
        # Resident size just after each of the worker's heap trims, between units: the
        # memory the session keeps (heap.py); the gated growth is measured on these.
        "kept_memory_mb": [[round(t - started, 1), round(rss / 2**20, 1)]
                           for t, rss in session.heap.kept],
        "heap_trims": session.heap.trims,
        "heap_trim_seconds": round(session.heap.seconds, 4),
        "native_duplex": backend.spec.native_duplex,
        "unit_seconds": backend.spec.unit_ms / 1000,
        "note": user.note or (f"room failed: {room.error}" if room.error else ""),
        "lines": [p.as_task(rate) for p in user.placements],
    }
    (folder / TASK_FILE).write_text(json.dumps(task, indent=1))
    return score_folder(folder)


@functools.cache
def _burst_kind():
    """The word classifier for short utterances, loaded once for every scenario."""
    from app.flow.burst_kind import load_burst_kind

    return load_burst_kind()


def _turn_taking(silence: float | None, use_model: bool):
    """The end-of-turn judge, the controller's settings, and the wait the gates allow.

    With the model (the app's default: patience step 3), a turn ends when the model, asked
    at JUDGE_AFTER of silence, says so, and at the cap otherwise; the gates allow the ask
    plus the model's compute budget (`duetto bench turn`: 0.15 s). Without it (or when it
    cannot load), the silence decides and is the wait.
    """
    from app.flow.duplex import DuplexConfig
    from app.flow.turn_end import JUDGE_AFTER, TurnJudge, load_turn_judge, patience

    step = patience(3)
    judge = load_turn_judge(step) if use_model else TurnJudge(None)
    if judge.detector is None:
        if judge.failure:
            print(f"end-of-turn model: {judge.failure}; silence only", file=sys.stderr)
            judge = TurnJudge(None)
        duplex = DuplexConfig(end_of_turn_silence=silence) if silence else DuplexConfig()
        return judge, duplex, duplex.end_of_turn_silence
    duplex = DuplexConfig(end_of_turn_silence=silence or step.cap, judge_after=JUDGE_AFTER)
    return judge, duplex, JUDGE_AFTER + TURN_MODEL_COMPUTE


class MemorySampler:
    """The process's resident memory every few seconds while a scenario runs."""

    def __init__(self, every: float = 5.0) -> None:
        import threading

        self.every = every
        self.samples: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory", daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        import psutil

        process = psutil.Process()
        while True:
            t = round(time.monotonic() - self._started, 1)
            self.samples.append([t, round(process.memory_info().rss / 2**20, 1)])
            if self._stop.wait(self.every):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def memory_by_minute(samples: list[list[float]], settle: float = 60.0) -> list[float]:
    """The median sample of each minute from `settle` on (MB): one sample caught in the
    middle of a computation does not move a median, a leak moves every later one."""
    minutes: dict[int, list[float]] = {}
    for t, mb in samples:
        if t >= settle:
            minutes.setdefault(int((t - settle) // 60), []).append(mb)
    return [round(float(np.median(v)), 1) for _, v in sorted(minutes.items())]


def memory_growth(samples: list[list[float]], settle: float = 60.0) -> float | None:
    """How far memory rose after the first minute (MB), for runs of 2 min or more: the
    highest later minute (`memory_by_minute`) against the minute after `settle` (models,
    buffers and caches are all in place by then)."""
    if not samples or samples[-1][0] < 2 * settle:
        return None
    medians = memory_by_minute(samples, settle)
    if len(medians) < 2:
        return None
    return round(max(medians[1:]) - medians[0], 1)


def peak_growth(samples: list[list[float]], settle: float = 60.0) -> float | None:
    """The highest sample after the first minute against the first one (MB): memory
    kept plus whatever the model was computing at that moment (reported, not gated)."""
    late = [mb for t, mb in samples if t >= settle]
    if not samples or samples[-1][0] < 2 * settle or len(late) < 2:
        return None
    return round(max(late) - late[0], 1)


# ----------------------------------------------------------------------- scoring on disk
def score_folder(folder: Path) -> dict[str, Any]:
    """Score one saved run (conversation.wav, events.jsonl, task.json, user.wav)."""
    from app.flow.recording import read_events

    task = json.loads((folder / TASK_FILE).read_text())
    stereo, rate = soundfile.read(str(folder / "conversation.wav"), dtype="float32",
                                  always_2d=True)
    if stereo.shape[1] != 2:
        raise ValueError(f"{folder}: conversation.wav must be stereo")
    user_path = folder / USER_FILE
    if user_path.exists():  # the clean voice; the mic channel also holds echo and noise
        user, user_rate = soundfile.read(str(user_path), dtype="float32")
        if user_rate != rate:
            raise ValueError(f"{folder}: {USER_FILE} is at {user_rate} Hz, not {rate}")
    else:
        user = stereo[:, 0]
    events = read_events(folder / "events.jsonl")
    score = scoring.score_recording(user, stereo[:, 1], rate, task, events)
    # The gates' end-of-turn wait: older runs (silence only) have just the silence.
    score["end_of_turn_silence"] = task.get(
        "end_of_turn_wait", task.get("end_of_turn_silence", DEFAULT_END_OF_TURN))
    score["end_of_turn_model"] = bool(task.get("end_of_turn_model", False))
    score["wall_seconds"] = task.get("wall_seconds")
    # Older runs have no kept-memory samples: then the raw samples stand in.
    kept = task.get("kept_memory_mb") or task.get("memory_mb", [])
    score["memory_growth_mb"] = memory_growth(kept)
    if score["memory_growth_mb"] is not None:
        score["memory_by_minute_mb"] = memory_by_minute(kept)
    score["memory_peak_growth_mb"] = peak_growth(task.get("memory_mb", []))
    score["native_duplex"] = bool(task.get("native_duplex", False))
    score["unit_seconds"] = task.get("unit_seconds")
    score["note"] = task.get("note", "")
    score["folder"] = str(folder)
    (folder / SCORE_FILE).write_text(json.dumps(score, indent=1))
    return score


def summarize(scores: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    eots = {s.get("end_of_turn_silence", DEFAULT_END_OF_TURN) for s in scores}
    eot = max(eots) if eots else DEFAULT_END_OF_TURN
    summary = scoring.pool(scores)
    # A native-duplex model decides itself when to speak: its turn-taking figures are
    # reported, not gated, and it is held to keeping up with real time (scoring.py).
    native = any(s.get("native_duplex") for s in scores)
    unit = max((s.get("unit_seconds") or 0.0 for s in scores), default=0.0) or None
    verdicts = scoring.targets(summary, eot, native_duplex=native, unit_seconds=unit)
    reported = scoring.model_figures(summary, eot) if native else {}
    by_category: dict[str, list[dict[str, Any]]] = {}
    for s in scores:
        by_category.setdefault(s["category"], []).append(s)
    return {
        **meta,
        "end_of_turn_silence": eot,
        "summary": summary,
        "native_duplex": native,
        "targets": verdicts,
        "reported": reported,
        "passed": all(verdicts.values()),
        "categories": {c: scoring.pool(group) for c, group in sorted(by_category.items())},
        "scenarios": scores,
    }


def write_results(out: Path, results: dict[str, Any]) -> str:
    text = table(results)
    (out / RESULTS_JSON).write_text(json.dumps(results, indent=1))
    (out / RESULTS_TXT).write_text(text + "\n")
    return text


def rescore(folder: Path) -> int:
    tasks = sorted(folder.rglob(TASK_FILE))
    if not tasks:
        print(f"duetto bench duplex: no saved runs ({TASK_FILE}) under {folder}",
              file=sys.stderr)
        return 2
    scores = [score_folder(t.parent) for t in tasks]
    old = folder / RESULTS_JSON
    meta = {}
    if old.exists():
        previous = json.loads(old.read_text())
        meta = {k: previous[k] for k in ("backend", "machine", "started") if k in previous}
    meta["rescored"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results = summarize(scores, meta)
    print(write_results(folder, results))
    return 0 if results["passed"] else 1


# ----------------------------------------------------------------------- command
def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"


def default_out() -> Path:
    from app.paths import data_dir

    return data_dir() / "bench" / "duplex" / time.strftime("%Y%m%d-%H%M%S")


def run(args: argparse.Namespace) -> int:
    if args.rescore is not None:
        return rescore(args.rescore)
    try:
        folder = args.scenarios or builtin_dir(getattr(args, "scenario_set", "default"))
        scenarios = select(load_dir(folder), args.only, args.long)
    except ScenarioError as exc:
        print(f"duetto bench duplex: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for s in scenarios:
            mark = "" if s.default else "  (not in the default set)"
            print(f"{s.name:<34} {s.category:<20} {s.description}{mark}")
        return 0
    from app.bench.speech_cache import (
        SpeechCache,
        SpeechUnavailable,
        UnknownVoice,
        check_tools,
        check_voices,
    )
    from app.model.contract import BackendError

    try:
        check_tools()
        # Before the model loads: a voice espeak-ng lacks stops the run in a second.
        wanted: dict[str, list[str]] = {}
        for s in scenarios:
            for line in s.lines:
                wanted.setdefault(line.voice.name, []).append(s.name)
        check_voices(wanted)
        _check_photos(scenarios)
    except (SpeechUnavailable, UnknownVoice, ScenarioError) as exc:
        print(f"duetto bench duplex: {exc}", file=sys.stderr)
        return 2
    out = args.out or default_out()
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    speech = SpeechCache()
    scores = []
    with tempfile.TemporaryDirectory(prefix="duetto-duplex-") as tmp:
        try:
            made = make_backend(args, Path(tmp))
        except BackendError as exc:
            print(f"duetto bench duplex: {exc}", file=sys.stderr)
            return 2
        print(f"backend: {made.description}; {len(scenarios)} scenarios; out: {out}",
              flush=True)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        for i, scenario in enumerate(scenarios, 1):
            try:
                score = run_scenario(scenario, made.backend, out, args, speech)
            except SpeechUnavailable as exc:
                print(f"duetto bench duplex: {exc}", file=sys.stderr)
                return 2
            scores.append(score)
            print(f"[{i}/{len(scenarios)}] {scenario.name}: {one_line(score)}", flush=True)
        hops = hop_figures(made.backend)
        made.backend.close()
    results = summarize(scores, {"backend": made.description, "machine": _machine(),
                                 "started": started})
    if hops is not None:
        # Reported, not gated: the answers themselves are gated like a local family's.
        results["network_hop"] = hops
    print(write_results(out, results))
    if hops is not None:
        print(f"network hop (round trip less the server's own time, per answer): median "
              f"{hops['median_ms']} ms, p90 {hops['p90_ms']} ms over {hops['count']}")
    print(f"recordings, results.txt and results.json are in {out}")
    return 0 if results["passed"] else 1


def _check_photos(scenarios: list[Scenario]) -> None:
    """Every photograph the scenarios show can be decoded (before the model loads)."""
    from app.bench.duplex_media import HandheldPhoto

    for s in scenarios:
        if s.video is not None and s.video.photo is not None:
            try:
                HandheldPhoto(s.video.photo)
            except ValueError as exc:
                raise ScenarioError(f"{s.source or s.name}: {exc}") from None


def one_line(score: dict[str, Any]) -> str:
    parts = []
    for r in score["lines"]:
        if r["expect"] == "none":
            continue
        bits = [r["expect"]]
        for key in ("tor", "latency", "stop_latency", "kept_floor"):
            if r.get(key) is not None:
                bits.append(f"{key}={r[key]}")
        if not r["valid"]:
            bits.append("invalid")
        parts.append(" ".join(str(b) for b in bits))
    s = score["session"]
    parts.append(f"underruns={s['underruns']} wall={score.get('wall_seconds')}s")
    return "; ".join(parts)
