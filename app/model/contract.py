"""The backend contract: what flows into a model family and what comes out.

Every family (turn-based Qwen2.5-Omni, per-unit native duplex MiniCPM-o, per-frame
native duplex Moshi/PersonaPlex) is driven through these types, so the session loop
never needs to know which one it talks to. Nothing here imports flow or Qt.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class VideoFrame:
    """One camera frame placed on the session clock.

    `pixels` is H×W×3 uint8 in RGB order (converted from OpenCV's BGR at capture, so
    no consumer has to remember which order it is). `t` is the capture time in
    seconds on the session clock (the microphone's sample count), `seq` the source's
    own running frame number.
    """

    pixels: np.ndarray
    t: float
    seq: int


@dataclass(frozen=True)
class Unit:
    """One slice of the shared timeline, cut at the backend's unit length.

    `audio` holds exactly `duration * sample_rate` float32 mono samples at the
    backend's input rate, covering [start, start + duration) on the session clock.
    `frames` are the frames chosen for this unit, oldest first. `gap_samples` counts
    samples that were missing at capture and were filled with silence.
    """

    index: int
    start: float
    duration: float
    sample_rate: int
    audio: np.ndarray
    frames: tuple[VideoFrame, ...] = ()
    gap_samples: int = 0

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def has_gap(self) -> bool:
        return self.gap_samples > 0


class Quant(enum.StrEnum):
    """How weights are held in memory."""

    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"
    NF4 = "nf4"


class Decision(enum.StrEnum):
    """What the model chose to do for the unit it was given."""

    LISTEN = "listen"
    SPEAK = "speak"
    END_OF_TURN = "end_of_turn"


@dataclass(frozen=True)
class Control:
    """What the duplex controller knows and the model may not.

    `turn_ended`: the user finished a turn (runtime duplex: voice activity said so).
    `barge_in`: the user started talking over the assistant; stop at once.
    `force_listen`: the user asked the assistant to be quiet (a button, a shortcut).
    """

    turn_ended: bool = False
    barge_in: bool = False
    force_listen: bool = False


@dataclass(frozen=True)
class SpeechChunk:
    """A piece of the assistant's voice, ready to play.

    `seq` numbers chunks within one response so the player can report which sample of
    which chunk has reached the speaker; `text_span` is the text this chunk speaks,
    when the backend knows it (used by `heard` after a barge-in).
    """

    audio: np.ndarray
    sample_rate: int
    response_id: int
    seq: int
    text_span: str = ""


@dataclass(frozen=True)
class Output:
    """One item a backend yields while stepping a unit.

    A step yields any number of these: a decision, text as it is produced, speech as
    it is synthesized. Fields that do not apply are left at their defaults.
    """

    decision: Decision | None = None
    text: str = ""
    speech: SpeechChunk | None = None


@dataclass(frozen=True)
class Voice:
    """A persona's voice: a built-in speaker name, or a reference recording."""

    builtin: str | None = None
    reference_audio: Path | None = None

    def describe(self) -> str:
        if self.builtin:
            return f"built-in voice '{self.builtin}'"
        if self.reference_audio:
            return f"reference recording {self.reference_audio.name}"
        return "the model's default voice"


@dataclass(frozen=True)
class Persona:
    """Who the assistant is: a role prompt, a language and a voice."""

    name: str
    role_prompt: str
    language: str = "en"
    voice: Voice = field(default_factory=Voice)


@dataclass(frozen=True)
class BackendSpec:
    """What a family needs and offers, known before any weights are loaded.

    `vram_gib` maps each supported quantization to the GPU memory the model needs for a
    conversation, in GiB, from its memory plan (memory_plan.py): weights, context and
    working memory.
    """

    family: str
    unit_ms: int
    audio_in_rate: int
    audio_out_rate: int
    frames_per_unit: int
    native_duplex: bool
    voices: tuple[str, ...] = ()
    accepts_reference_voice: bool = False
    vram_gib: Mapping[Quant, float] = field(default_factory=dict)
    # Speech the player gathers before it starts, where this backend's speech comes less
    # evenly than a local step's (a server's, across a network); None: the player's own.
    playback_cushion_ms: int | None = None


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: a local folder, or a hub id at a pinned revision."""

    local_dir: Path | None = None
    hub_id: str | None = None
    revision: str | None = None

    def describe(self) -> str:
        if self.local_dir is not None:
            return str(self.local_dir)
        rev = f"@{self.revision[:10]}" if self.revision else ""
        return f"{self.hub_id}{rev}"


Progress = Callable[[str, float], None]
"""Reports (what is happening, fraction done in [0, 1]) during long operations."""


class BackendError(Exception):
    """A failure the user can act on. `hint` says what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


@runtime_checkable
class Backend(Protocol):
    """One model family behind one interface."""

    spec: BackendSpec

    def load(self, source: ModelSource, quant: Quant, progress: Progress) -> None: ...

    def start(self, persona: Persona) -> None: ...

    def step(self, unit: Unit, control: Control) -> Iterator[Output]: ...

    def heard(self, played_text: str) -> None: ...

    def interrupt(self) -> None:
        """Any thread: stop the step() in progress within one generation step."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FollowsPlayback(Protocol):
    """Optional, beside Backend: a backend that wants to know what was actually heard.

    The session calls `played()` a few times a second while an answer plays, with how
    much of response `response_id` (the ids its SpeechChunks carry) has reached the
    speaker so far, in seconds: cumulative, never decreasing for one response. It calls
    from its listener thread (the worker may be busy inside step()), so it must return
    at once: queue the news, never wait on a network. A model on a server acknowledges
    it so the server's memory of what it said follows what the user heard. Local
    families do not implement it.
    """

    def played(self, response_id: int, seconds: float) -> None: ...
