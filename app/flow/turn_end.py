"""End of the user's turn, judged by a model rather than by a silence timer alone.

A silence timer cannot tell "What time is it?" from "I was wondering if you could...":
both stop, and a timer long enough not to cut off the second makes the first wait. Here,
when voice activity has heard a short silence (`DuplexConfig.judge_after`, about
200 ms), Smart Turn v3 (pipecat-ai/smart-turn: Whisper-tiny's encoder and a classifier,
8 MB int8 ONNX, BSD-2, 23 languages) scores the turn so far, up to its last 8 s, for how
likely it is complete. At or above the threshold the turn ends then; below it the turn
ends only after the longer silence cap (`DuplexConfig.end_of_turn_silence`), as without
a model. The duplex controller asks (Action.JUDGE_TURN); the session answers with the
verdict; the answer prepared during the silence is kept or dropped as before.

The weights: the `pipecat-ai` package ships `smart-turn-v3.2-cpu.onnx` inside its wheel
(BSD-2, like the model). Its path is found through the package's installed files, so
nothing of pipecat is imported and nothing is downloaded at run time. When the file is
missing the detector is unavailable, the conversation falls back to the silence timer
and says so.

Where a backend decides for itself when to speak (native duplex: Moshi, MiniCPM-o), its
own decision is its end of turn and the controller never ends a turn for it; this
detector then only decides when the user's hold on the floor after a barge-in is over.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from app.flow.turn_features import RATE, WINDOW_SAMPLES, log_mel_features

WEIGHTS_PACKAGE = "pipecat-ai"
WEIGHTS_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
# Smart Turn's published operating point: its reported accuracy is quoted at 0.5.
DEFAULT_THRESHOLD = 0.5

log = logging.getLogger(__name__)


class TurnModelUnavailable(RuntimeError):
    """The end-of-turn model cannot be loaded; the silence timer still works."""


def bundled_model_path() -> Path:
    """Where the installed `pipecat-ai` wheel keeps Smart Turn v3's ONNX file."""
    try:
        dist = importlib.metadata.distribution(WEIGHTS_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise TurnModelUnavailable(
            f"the end-of-turn model ships in the '{WEIGHTS_PACKAGE}' package, which is not "
            f"installed (pip install {WEIGHTS_PACKAGE})"
        ) from exc
    path = Path(str(dist.locate_file(WEIGHTS_FILE)))
    if not path.is_file():
        raise TurnModelUnavailable(
            f"the end-of-turn model {path.name} is missing from the installed "
            f"'{WEIGHTS_PACKAGE}' {dist.version}"
        )
    return path


class TurnScorer(Protocol):
    def probability(self, audio: np.ndarray) -> float:
        """How likely the turn in `audio` (16 kHz mono, ending now) is complete, 0..1."""
        ...


# The graph's value after the encoder's last layer norm, (batch, 400 frames of 20 ms,
# 384): also an output of our session, for the word classifier (burst_kind.py), so one
# session of the file serves both. Adding an output leaves the probability as it was
# (tests/test_burst_kind.py).
ENCODER_OUTPUT = "layer_norm_8_DequantizeLinear_Output"


class SmartTurn:
    """Smart Turn v3 on onnxruntime: the turn so far -> probability it is complete (and
    the encoder's last layer, `encode`)."""

    def __init__(self, model_path: Path | None = None, *, threads: int = 1) -> None:
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            raise TurnModelUnavailable("the end-of-turn model needs onnx and onnxruntime, "
                                       f"which are not both installed ({exc})") from exc
        path = model_path or bundled_model_path()
        options = ort.SessionOptions()
        # One thread, run in turn: the call is short and the cores belong to the model.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            graph = onnx.load(str(path))
            graph.graph.output.append(onnx.helper.make_tensor_value_info(
                ENCODER_OUTPUT, onnx.TensorProto.FLOAT, None))
            self._session = ort.InferenceSession(
                graph.SerializeToString(), sess_options=options,
                providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # a damaged or foreign file
            raise TurnModelUnavailable(
                f"the end-of-turn model {path} could not be loaded ({exc})"
            ) from exc
        self.path = path
        self._input = self._session.get_inputs()[0].name
        # The first run builds onnxruntime's kernels; pay for it now, not mid-pause.
        self.probability(np.zeros(RATE, dtype=np.float32))

    def run(self, audio: np.ndarray) -> tuple[float, np.ndarray]:
        """The probability that the turn in `audio` is complete, and the encoder's last
        layer (1, 400, 384)."""
        features = log_mel_features(audio)[np.newaxis]
        # The graph's output is named "logits" but is already a sigmoid probability.
        out, hidden = self._session.run(None, {self._input: features})
        return float(np.asarray(out).reshape(-1)[0]), np.asarray(hidden)

    def probability(self, audio: np.ndarray) -> float:
        return self.run(audio)[0]

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.run(audio)[1]


@dataclass(frozen=True)
class TurnVerdict:
    probability: float
    complete: bool
    seconds: float  # compute time of the call
    audio_seconds: float  # how much of the turn it heard


class TurnEndDetector:
    """A scorer and the threshold at which a turn counts as complete."""

    def __init__(self, scorer: TurnScorer, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("the end-of-turn threshold must lie between 0 and 1")
        self.scorer = scorer
        self.threshold = threshold

    def judge(self, audio: np.ndarray) -> TurnVerdict:
        started = time.perf_counter()
        p = self.scorer.probability(audio)
        return TurnVerdict(p, p >= self.threshold, time.perf_counter() - started,
                           len(audio) / RATE)


class TurnAudio:
    """The user's recent audio at 16 kHz on the session clock: what the detector hears.

    A ring of a little more than the model's 8 s window; `since(t)` gives the audio from
    session time `t` to the newest sample, at most the model's window.
    """

    def __init__(self, seconds: float = 10.0) -> None:
        self._buf = np.zeros(int(seconds * RATE), dtype=np.float32)
        self._written = 0  # samples ever pushed
        self._end_t: float | None = None  # session time just after the newest sample

    def push(self, samples: np.ndarray, t: float) -> None:
        """Append 16 kHz samples that begin at session time `t`."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = len(samples)
        if n == 0:
            return
        size = len(self._buf)
        if n >= size:
            samples = samples[-size:]
            n = size
        start = self._written % size
        first = min(n, size - start)
        self._buf[start : start + first] = samples[:first]
        self._buf[: n - first] = samples[first:]
        self._written += len(samples)
        self._end_t = t + len(samples) / RATE

    def since(self, t: float) -> np.ndarray:
        if self._end_t is None:
            return np.zeros(0, dtype=np.float32)
        want = round((self._end_t - t) * RATE)
        n = max(0, min(want, WINDOW_SAMPLES, self._written, len(self._buf)))
        size = len(self._buf)
        end = self._written % size
        idx = (np.arange(end - n, end)) % size
        return self._buf[idx]


class TurnJudge:
    """What the session keeps for the end-of-turn model: the detector and what it hears.

    `judge` never raises: a model that fails is dropped (the silence cap decides from
    then on) and `failure` says why, once, for the session to tell the user.
    """

    def __init__(self, detector: TurnEndDetector | None, failure: str | None = None) -> None:
        self.detector = detector
        self.audio = TurnAudio()
        self.failure = failure  # why there is no model, until the session has said it

    def hear(self, samples: np.ndarray, t: float) -> None:
        # Kept with or without the model: the word classifier (burst_kind.py) listens to
        # the same audio.
        self.audio.push(samples, t)

    def audio_for(self, turn_start: float | None, pause_start: float | None = None,
                  silence: float = 0.0) -> np.ndarray:
        """What the model hears of the turn that began at `turn_start`.

        With `pause_start` (where the user's speech ended), a pause heard for less than
        `silence` seconds is completed to that length with the silence already heard,
        mirrored back and forth (no seam): the model can be asked about the pause as it
        will be a moment later (duplex.py, `judge_early`). Voice activity has already
        called that silence no speech; if speech comes instead, the verdict is dropped.
        """
        audio = self.audio.since((turn_start if turn_start is not None else 0.0) - PRE_ROLL)
        if pause_start is None:
            return audio
        heard = self.audio.since(pause_start)
        missing = round(silence * RATE) - len(heard)
        if missing <= 0 or len(heard) == 0:
            return audio
        back_and_forth = np.concatenate([heard[::-1], heard])
        reps = -(-missing // len(back_and_forth))
        filler = np.tile(back_and_forth, reps)[:missing]
        return np.concatenate([audio, filler])[-WINDOW_SAMPLES:]

    def judge(self, turn_start: float | None, pause_start: float | None = None,
              silence: float = 0.0) -> TurnVerdict | None:
        """The verdict on the turn that began at `turn_start` (see `audio_for`); None
        without a model."""
        if self.detector is None:
            return None
        return self.judge_audio(self.audio_for(turn_start, pause_start, silence))

    def judge_audio(self, audio: np.ndarray) -> TurnVerdict | None:
        """The verdict on `audio` (16 kHz, the turn so far); None without a model. Never
        raises: a failing model is dropped and `failure` says why."""
        if self.detector is None:
            return None
        try:
            return self.detector.judge(audio)
        except Exception as exc:
            log.exception("end-of-turn model failed")
            self.detector = None
            self.failure = f"the end-of-turn model failed ({exc})"
            return None


@dataclass(frozen=True)
class TurnPatience:
    """One step of Settings -> Conversation's "quicker / more patient" control."""

    threshold: float  # the model's probability at which a turn counts as complete
    cap: float  # the silence that ends a turn whatever the model says (s)
    silence: float  # the silence that ends a turn when the model is off (s)


# 1 = quickest, 5 = most patient. Step 3 is Smart Turn's own operating point (0.5) with
# a 1.2 s cap; without the model it keeps the 0.6 s silence the app has always used.
# Quicker steps lower the threshold (more pauses taken as the end) and the cap; more
# patient ones raise both, for people who think aloud.
PATIENCE = {
    1: TurnPatience(threshold=0.3, cap=0.8, silence=0.4),
    2: TurnPatience(threshold=0.4, cap=1.0, silence=0.5),
    3: TurnPatience(threshold=0.5, cap=1.2, silence=0.6),
    4: TurnPatience(threshold=0.65, cap=1.6, silence=0.9),
    5: TurnPatience(threshold=0.8, cap=2.0, silence=1.2),
}
DEFAULT_PATIENCE = 3
# How much silence before the model is asked: long enough that voice activity has
# confirmed the pause (its offset needs 96 ms), short enough to answer quickly.
JUDGE_AFTER = 0.2
# The turn is scored from a little before its first speech, as the model was trained.
PRE_ROLL = 0.2


def patience(level: int) -> TurnPatience:
    return PATIENCE[min(max(level, min(PATIENCE)), max(PATIENCE))]


def load_turn_judge(step: TurnPatience | None) -> TurnJudge:
    """The judge for a conversation: Smart Turn at the step's threshold, or no model.

    A model that cannot be loaded is not fatal: the judge carries the reason, for the
    session to tell the user at the first pause, and turns end after a silence.
    """
    if step is None:
        return TurnJudge(None)
    try:
        return TurnJudge(TurnEndDetector(SmartTurn(), step.threshold))
    except TurnModelUnavailable as exc:
        log.warning("%s", exc)
        return TurnJudge(None, failure=str(exc))
