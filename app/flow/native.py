"""A native-duplex model's output, frame by frame, read as runs of speech.

Such a model (Moshi, PersonaPlex) yields for every frame a decision, maybe text, and a
speech chunk, whether it speaks or listens: its voice channel never stops. The session
must not treat each frame as an answer. This reader groups the outputs into frames and
says where a response starts (the first SPEAK of a new response id) and where it ends
(END_OF_TURN, which the model gives once after a quiet hangover; or the next response
starting, after a run the flow cut short by muting the model, which gets no END_OF_TURN).
Everything else, the LISTEN frames inside a run included, is no news for the duplex
controller.

A native family may yield text without speech (a checkpoint whose speech path is off).
Its output must still be one live stream, with runs placed on the playback clock, so
the session gives `frames` a `StandIn`: a step that yields no speech at all gets a
silent chunk of the unit's length in its place, where the speech would have come (after
the step's decision and text, before an END_OF_TURN that follows them), and the reader
numbers the runs itself (a SPEAK outside a run starts the next id). A step with any
speech of its own is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from app.model.contract import Decision, Output, SpeechChunk


@dataclass(frozen=True)
class Frame:
    """One frame's outputs. `ends` comes before `starts` when a frame has both."""

    decision: Decision | None
    text: str
    speech: SpeechChunk | None
    starts: int | None = None  # the response id whose first speech this frame is
    ends: int | None = None  # the response id that ended before this frame's speech


@dataclass(frozen=True)
class StandIn:
    """Silence to stand in for a step's missing speech: `seconds` at `rate` Hz."""

    seconds: float
    rate: int


class RunReader:
    """Worker side: remembers the response in progress across units."""

    def __init__(self) -> None:
        self.current: int | None = None  # the run of speech in progress, if any
        self._last_id = 0  # the highest response id seen (stand-ins number after it)
        self._stand_in_seq = 0

    def frames(self, outputs: Iterable[Output], stand_in: StandIn | None = None
               ) -> Iterator[Frame]:
        """Group a step's outputs into frames: each frame closes with its speech chunk.

        With `stand_in`, a step without speech gets a silent chunk (module docstring).
        """
        decision: Decision | None = None
        texts: list[str] = []
        spoke = False  # this step yielded speech (its own, or the stand-in)
        for out in outputs:
            if (out.decision is Decision.END_OF_TURN and stand_in is not None and not spoke
                    and (decision is not None or texts)):
                # The speech of what came before would have played before the end.
                spoke = True
                yield self._frame(decision, "".join(texts), None, stand_in)
                decision, texts = None, []
            if out.decision is not None:
                decision = out.decision
            if out.text:
                texts.append(out.text)
            if out.speech is not None:
                spoke = True
                yield self._frame(decision, "".join(texts), out.speech)
                decision, texts = None, []
        if decision is not None or texts:  # a frame without speech (allowed, if unusual)
            yield self._frame(decision, "".join(texts), None,
                              stand_in if not spoke else None)

    def _frame(self, decision: Decision | None, text: str, speech: SpeechChunk | None,
               stand_in: StandIn | None = None) -> Frame:
        ends = starts = None
        if decision is Decision.END_OF_TURN and self.current is not None:
            ends, self.current = self.current, None
        if speech is None and stand_in is not None:
            speech = self._silence(decision, text, stand_in)
        rid = speech.response_id if speech is not None else None
        if rid is not None:
            self._last_id = max(self._last_id, rid)
        if decision is Decision.SPEAK and rid is not None and rid != self.current:
            if self.current is not None:
                ends = self.current  # cut short by a mute: it never got its END_OF_TURN
            starts = self.current = rid
        return Frame(decision, text, speech, starts, ends)

    def _silence(self, decision: Decision | None, text: str, stand_in: StandIn) -> SpeechChunk:
        """A silent chunk in the run it belongs to: the current one, a new one for a SPEAK
        outside a run, else the last one (quiet after a run keeps its id, as a native
        model's own listening chunks do)."""
        if self.current is not None:
            rid = self.current
        elif decision is Decision.SPEAK:
            rid = self._last_id + 1
            self._stand_in_seq = 0
        else:
            rid = self._last_id
        samples = round(stand_in.seconds * stand_in.rate)
        chunk = SpeechChunk(np.zeros(samples, np.float32), stand_in.rate, rid,
                            self._stand_in_seq, text)
        self._stand_in_seq += 1
        return chunk
