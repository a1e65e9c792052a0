"""Whether a short utterance over the assistant is a backchannel or a bid for the floor.

While the assistant speaks, "mm-hm", "yeah" or "okay" mean "go on"; "stop", "wait" or
"hold on" mean "let me speak". Duration cannot tell them apart: espeak-ng says "okay" in
0.47 s, "mm-hm" in 0.82 s and "Stop." in 0.44 s, and over 30 words of each kind in 11
voices a duration rule (shorter than 0.4, 0.5 or 0.6 s: a backchannel) was right 59-63 %
of the time. The words can: Smart Turn's own encoder (Whisper-tiny's, already loaded for
the end of turn, turn_end.py) hears them, and a linear classifier on its last layer,
pooled over the utterance, told the two kinds apart for 85-98 % of the words of each
espeak-ng voice it was not trained on, and 84 % of Piper's natural voice (leave one
voice out; the figures are in the weights file).

The classifier is ours: `scripts/train_burst_kind.py` makes the training speech
offline (espeak-ng voices, Piper's natural voice when installed, with noise and level
changes), fits a logistic regression in numpy and writes `app/assets/burst_kind.json`:
the word lists, the voices, each held-out voice's accuracy, and the weights. Its
limits are in that file: synthetic voices only, English only, the words listed.

The utterance's audio is laid out as for the end-of-turn model (the last 8 s, padded at
the front, Whisper log-mel features); the encoder's last layer (400 frames of 20 ms) is
pooled (mean and max) over the frames that hold the utterance and its 0.2 s pre-roll.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.flow.turn_end import PRE_ROLL, SmartTurn, TurnModelUnavailable
from app.flow.turn_features import RATE, WINDOW_SAMPLES

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "burst_kind.json"
FRAME_SECONDS = 0.02  # the encoder's frames: 400 over the 8 s window
LEAD = PRE_ROLL  # heard from this long before its first speech, as a turn is


class BurstKindUnavailable(RuntimeError):
    """The classifier or the encoder it listens through cannot be loaded."""


def pooled(hidden: np.ndarray, seconds: float) -> np.ndarray:
    """Mean and max of the encoder frames holding the last `seconds` of the window."""
    frames = hidden.reshape(-1, hidden.shape[-1])
    k = min(len(frames), max(2, int(np.ceil(seconds / FRAME_SECONDS))))
    tail = frames[-k:]
    return np.concatenate([tail.mean(axis=0), tail.max(axis=0)]).astype(np.float64)


class EncoderTap:
    """The pooled encoding of an utterance, through the end-of-turn model's session."""

    def __init__(self, model: SmartTurn | None = None, *, threads: int = 1) -> None:
        if model is None:
            try:
                model = SmartTurn(threads=threads)
            except TurnModelUnavailable as exc:
                raise BurstKindUnavailable(str(exc)) from exc
        self.model = model

    def features(self, audio: np.ndarray) -> np.ndarray:
        """The pooled encoding of `audio` (16 kHz mono, the utterance ending now)."""
        hidden = self.model.encode(audio)
        return pooled(hidden, min(len(audio), WINDOW_SAMPLES) / RATE)


@dataclass(frozen=True)
class Classifier:
    """A logistic regression on standardized features: P(bid for the floor)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float = 0.5

    def floor_probability(self, features: np.ndarray) -> float:
        z = (features - self.mean) / self.scale
        return float(1.0 / (1.0 + np.exp(-(z @ self.weights + self.bias))))

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias,
                "threshold": self.threshold}

    @classmethod
    def from_json(cls, data: dict) -> Classifier:
        arrays = [np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "weights")]
        if not (arrays[0].shape == arrays[1].shape == arrays[2].shape
                and arrays[0].ndim == 1):
            raise ValueError("mean, scale and weights must be vectors of one length")
        if not np.all(arrays[1] > 0):
            raise ValueError("every scale must be positive")
        return cls(*arrays, bias=float(data["bias"]),
                   threshold=float(data.get("threshold", 0.5)))


@dataclass(frozen=True)
class BurstVerdict:
    floor_probability: float
    wants_floor: bool
    seconds: float  # compute time


class BurstKind:
    """The encoder and the classifier: an utterance -> backchannel or bid for the floor."""

    def __init__(self, tap: EncoderTap, classifier: Classifier) -> None:
        self.tap = tap
        self.classifier = classifier

    def judge(self, audio: np.ndarray) -> BurstVerdict:
        started = time.perf_counter()
        p = self.classifier.floor_probability(self.tap.features(audio))
        return BurstVerdict(p, p >= self.classifier.threshold, time.perf_counter() - started)


@functools.cache
def shipped_classifier(path: Path = WEIGHTS) -> Classifier:
    try:
        data = json.loads(Path(path).read_text())
        return Classifier.from_json(data["classifier"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BurstKindUnavailable(f"the word classifier {Path(path).name} could not be "
                                   f"read ({exc})") from exc


def load_burst_kind(model: object = None) -> BurstKind | None:
    """The classifier for a conversation, or None (the duration rule alone) with a log
    line saying why. `model`: the conversation's end-of-turn model, whose session it
    shares when it is Smart Turn; without one it loads its own."""
    try:
        tap = EncoderTap(model if isinstance(model, SmartTurn) else None)
        return BurstKind(tap, shipped_classifier())
    except BurstKindUnavailable as exc:
        log.warning("short utterances are judged by their length alone: %s", exc)
        return None
