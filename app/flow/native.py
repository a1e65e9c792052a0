"""A native-duplex model's output, frame by frame, read as runs of speech.

Such a model (Moshi, PersonaPlex) yields for every frame a decision, maybe text, and a
speech chunk, whether it speaks or listens: its voice channel never stops. The session
must not treat each frame as an answer. This reader groups the outputs into frames and
says where a response starts (the first SPEAK of a new response id) and where it ends
(END_OF_TURN, which the model gives once after a quiet hangover; or the next response
starting, after a run the flow cut short by muting the model, which gets no END_OF_TURN).
Everything else, the LISTEN frames inside a run included, is no news for the duplex
controller.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from app.model.contract import Decision, Output, SpeechChunk


@dataclass(frozen=True)
class Frame:
    """One frame's outputs. `ends` comes before `starts` when a frame has both."""

    decision: Decision | None
    text: str
    speech: SpeechChunk | None
    starts: int | None = None  # the response id whose first speech this frame is
    ends: int | None = None  # the response id that ended before this frame's speech


class RunReader:
    """Worker side: remembers the response in progress across units."""

    def __init__(self) -> None:
        self.current: int | None = None  # the run of speech in progress, if any

    def frames(self, outputs: Iterable[Output]) -> Iterator[Frame]:
        """Group a step's outputs into frames: each frame closes with its speech chunk."""
        decision: Decision | None = None
        texts: list[str] = []
        for out in outputs:
            if out.decision is not None:
                decision = out.decision
            if out.text:
                texts.append(out.text)
            if out.speech is not None:
                yield self._frame(decision, "".join(texts), out.speech)
                decision, texts = None, []
        if decision is not None or texts:  # a frame without speech (allowed, if unusual)
            yield self._frame(decision, "".join(texts), None)

    def _frame(self, decision: Decision | None, text: str, speech: SpeechChunk | None
               ) -> Frame:
        ends = starts = None
        if decision is Decision.END_OF_TURN and self.current is not None:
            ends, self.current = self.current, None
        rid = speech.response_id if speech is not None else None
        if decision is Decision.SPEAK and rid is not None and rid != self.current:
            if self.current is not None:
                ends = self.current  # cut short by a mute: it never got its END_OF_TURN
            starts = self.current = rid
        return Frame(decision, text, speech, starts, ends)
