"""A TEST INSTRUMENT: scripted turns for a tiny random-weight MiniCPM-o.

A random model's decisions are noise, so a test cannot say where it will speak. A tiny
checkpoint may carry a schedule in its `duetto.json`: "speak_runs": [[first, end), ...]
in units since the conversation started, or "reply_units": N, an answer of N units to
each turn of the user's as the flow ends it (for scripted conversations). The backend
then adds large biases to the logits at each decode step so the model speaks exactly
in those units (<|speak|>, then the words SAID, then a chunk end, and <|turn_eos|> in a
run's last unit) and listens elsewhere. Everything else runs as for real weights: the
decode, the official listen-while-open rule, the cache and the window. Real checkpoints
never carry a schedule (the backend reads one only from a folder marked tiny); the
backend's load, the benchmark and tests are all that use this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.model.contract import Control
from app.model.minicpm_o.protocol import SpecialIds

META = "duetto.json"
BIAS = 100.0  # far above any random logit: the scripted token wins every draw
WORDS = 4  # steps of each scheduled unit before it ends: <|speak|>, then the words
SAID = "hi "  # the words of each scheduled unit (a random model's own are unreadable)


class _Scripted:
    """What both schedules share: the steer that makes the model speak in `speaks` units."""

    def speaks(self, unit: int) -> bool:
        raise NotImplementedError

    def last_of_run(self, unit: int) -> bool:
        raise NotImplementedError

    def hear(self, unit: int, control: Control, audio: np.ndarray | None = None) -> None:
        """The flow's control and the audio of `unit`, before it is decoded (ReplySchedule
        uses them)."""

    def steer(self, ids: SpecialIds, tokenizer):
        """The decoder's steer: (unit, step, turn open) -> {token id: bias}."""
        quiet = {ids.listen: -BIAS, ids.turn_eos: -BIAS, ids.chunk_eos: -BIAS,
                 ids.chunk_tts_eos: -BIAS}
        words = tokenizer.encode(SAID, add_special_tokens=False)

        def bias(unit: int, j: int, turn_open: bool) -> dict[int, float]:
            if not self.speaks(unit):
                # Listen; an open turn (cut short from outside) is closed first.
                return {ids.turn_eos: BIAS} if turn_open else {ids.listen: BIAS}
            if j == 0:
                return {**quiet, ids.speak: BIAS}
            if j < WORDS:
                return {**quiet, words[(j - 1) % len(words)]: BIAS}
            if self.last_of_run(unit):
                return {ids.turn_eos: BIAS} if turn_open else {ids.listen: BIAS}
            return {ids.chunk_eos: BIAS}

        return bias


@dataclass(frozen=True)
class SpeakSchedule(_Scripted):
    """Units [first, end) in which the model speaks; it ends each run with <|turn_eos|>."""

    runs: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        for first, end in self.runs:
            if not 0 <= first < end:
                raise ValueError(f"a speaking run needs 0 <= first < end, got {first}, {end}")

    def speaks(self, unit: int) -> bool:
        return any(first <= unit < end for first, end in self.runs)

    def last_of_run(self, unit: int) -> bool:
        return any(unit == end - 1 for _, end in self.runs)


class ReplySchedule(_Scripted):
    """The model answers each turn of the user's: it speaks `answer_units` units from the
    unit in which the user stopped talking, and stops at a barge-in. For scripted
    conversations (`duetto bench duplex`), where turns fall wherever the scenario puts
    them; a real model decides this itself, from what it hears.

    "Stopped talking", as a stand-in for the model's own judgement: the unit's audio had
    speech (a 100 ms frame above SPEECH_DBFS) in it or in the unit before, and its last
    QUIET_TAIL_S are below it; or the flow says the turn ended (after a barge-in's hold).
    """

    SPEECH_DBFS = -35.0
    QUIET_TAIL_S = 0.3
    FRAME_S = 0.1

    def __init__(self, answer_units: int, rate: int = 16000) -> None:
        if answer_units < 1:
            raise ValueError(f"an answer needs at least one unit, got {answer_units}")
        self.answer_units = answer_units
        self.rate = rate
        self._run: tuple[int, int] | None = None  # [first, end) of the answer in progress
        self._talked = False  # the user's speech was heard since the last answer began

    def hear(self, unit: int, control: Control, audio: np.ndarray | None = None) -> None:
        loud = self._loud_frames(audio)
        if control.barge_in or control.force_listen:
            self._run = None  # the forced listen closes the turn; nothing more to say
            self._talked = True
            return
        if self.speaks(unit):
            return
        tail = max(1, round(self.QUIET_TAIL_S / self.FRAME_S))
        stopped = self._talked or any(loud)
        stopped = stopped and len(loud) >= tail and not any(loud[-tail:])
        if control.turn_ended or stopped:
            self._run = (unit, unit + self.answer_units)
            self._talked = False
        elif any(loud):
            self._talked = True

    def _loud_frames(self, audio: np.ndarray | None) -> list[bool]:
        if audio is None or audio.size == 0:
            return []
        n = max(1, round(self.FRAME_S * self.rate))
        frames = audio[: audio.size // n * n].reshape(-1, n).astype(np.float64)
        rms = np.sqrt(np.mean(frames * frames, axis=1)) + 1e-12
        return list(20 * np.log10(rms) > self.SPEECH_DBFS)

    def speaks(self, unit: int) -> bool:
        return self._run is not None and self._run[0] <= unit < self._run[1]

    def last_of_run(self, unit: int) -> bool:
        return self._run is not None and unit == self._run[1] - 1


def write(folder: Path, runs: Sequence[tuple[int, int]]) -> None:
    """Give the tiny checkpoint in `folder` a schedule (kept with its other metadata)."""
    path = Path(folder) / META
    meta = _meta(folder)
    meta["tiny"] = True
    meta.pop("reply_units", None)
    meta["speak_runs"] = [[int(a), int(b)] for a, b in runs]
    SpeakSchedule(tuple((a, b) for a, b in meta["speak_runs"]))  # refuse a bad one now
    path.write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _meta(folder: Path) -> dict:
    try:
        meta = json.loads((Path(folder) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def is_tiny(folder: Path) -> bool:
    """Whether `folder` holds a tiny test checkpoint (its duetto.json says so)."""
    return bool(_meta(folder).get("tiny"))


def read(folder: Path) -> SpeakSchedule | ReplySchedule | None:
    """The schedule of a tiny checkpoint; None for any other folder. "speak_runs" are
    fixed units; "reply_units" answers each turn of the user's."""
    meta = _meta(folder)
    if not meta.get("tiny"):
        return None
    if meta.get("speak_runs"):
        return SpeakSchedule(tuple((int(a), int(b)) for a, b in meta["speak_runs"]))
    if meta.get("reply_units"):
        return ReplySchedule(int(meta["reply_units"]))
    return None


def write_replies(folder: Path, answer_units: int) -> None:
    """Make the tiny checkpoint in `folder` answer each of the user's turns."""
    ReplySchedule(answer_units)  # refuse a bad one now
    meta = _meta(folder)
    meta["tiny"] = True
    meta.pop("speak_runs", None)
    meta["reply_units"] = int(answer_units)
    (Path(folder) / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
