"""Server events read back as the backend contract's outputs.

The server's response ids ("resp_3") become increasing numbers, as a local family's
are; each audio delta becomes a SpeechChunk at 24 kHz; `response.speak` and the
delta's `model_speak` are the SPEAK decision, a `response.listen` beat the LISTEN one.
A completed response ends with END_OF_TURN where a local native model puts it: as the
decision of the next listening frame. A ledger keeps, per response, each chunk's
length and text, so a playback position can be turned into milliseconds and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.model.contract import BackendError, Decision, Output, SpeechChunk
from app.model.remote import wire


@dataclass
class Piece:
    ms: float
    text: str = ""


@dataclass
class Answer:
    """What one step read: its outputs, and whether the unit (or turn) is answered."""

    outputs: list[Output] = field(default_factory=list)
    unit_answered: bool = False
    turn_answered: bool = False


class AnswerReader:
    def __init__(self, marks_units: bool = False, first_id: int = 1) -> None:
        # True when the server marks the event that closes each unit (ours does, and
        # says so with the capability `marks_units`); else the first decision-bearing
        # event answers a unit (a vLLM-Omni server).
        self.marks_units = marks_units
        self.ids: dict[str, int] = {}  # wire response id -> our response id
        self.wire_ids: dict[int, str] = {}
        self.ledger: dict[int, list[Piece]] = {}
        self.current: int | None = None  # the response whose audio is streaming
        self.completed: list[tuple[str, float]] = []  # (wire id, ms) to acknowledge
        self.cancelled: list[str] = []  # wire ids of the last answers cut short
        # Our ids go on increasing across sessions (a new session after a server restart
        # starts its own at resp_1 again; the flow must see a new response).
        self._count = first_id - 1
        self._seq: dict[int, int] = {}
        self._speak = False
        self._end_pending = False
        self._held: SpeechChunk | None = None

    @property
    def last_id(self) -> int:
        return self._count

    def _rid(self, wire_id: str) -> int:
        if wire_id not in self.ids:
            self._count += 1
            self.ids[wire_id] = self._count
            self.wire_ids[self._count] = wire_id
            self.ledger[self._count] = []
            while len(self.ledger) > 16:  # only recent answers can still be heard()
                del self.ledger[next(iter(self.ledger))]
        return self.ids[wire_id]

    def read(self, event: dict[str, Any], unit_index: int) -> Answer:
        """One server event; `unit_index` is the unit the caller waits for."""
        kind = event["type"]
        answer = Answer()
        if self._held is not None and kind not in wire.TRANSCRIPT_DELTAS:
            answer.outputs.append(Output(speech=self._held))  # no transcript came
            self._held = None
        meta = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
        done = meta.get("unit_done")
        if self.marks_units:
            closes_unit = isinstance(done, int) and done >= unit_index
        else:
            closes_unit = kind in wire.AUDIO_DELTAS or kind == "response.listen"
        if kind == "response.created":
            self._rid(str(event.get("response_id") or ""))
        elif kind == "response.speak":
            self._speak = True
        elif kind in wire.AUDIO_DELTAS:
            rid = self._rid(str(event.get("response_id") or ""))
            rate = event.get("sample_rate_hz") or wire.OUTPUT_RATE
            audio = wire.pcm16_samples(wire.unb64(str(event.get("delta") or "")))
            speaks = bool(meta.get("model_speak", True)) or self._speak
            self._speak = False
            seq = self._seq.get(rid, 0)
            self._seq[rid] = seq + 1
            self.current = rid
            self.ledger.setdefault(rid, []).append(Piece(1000 * len(audio) / rate))
            answer.outputs.append(Output(decision=Decision.SPEAK if speaks else Decision.LISTEN))
            # Held for its transcript, which follows: a local family yields a frame's
            # text before its speech, and the session reads frames that way.
            self._held = SpeechChunk(np.ascontiguousarray(audio, np.float32), int(rate),
                                     rid, seq)
            answer.unit_answered = closes_unit
        elif kind in wire.TRANSCRIPT_DELTAS:
            text = str(event.get("delta") or "")
            rid = self.ids.get(str(event.get("response_id") or ""))
            if rid is not None and self.ledger.get(rid):
                self.ledger[rid][-1].text += text
            if text:
                answer.outputs.append(Output(text=text))
            if self._held is not None:
                held = self._held
                answer.outputs.append(Output(speech=SpeechChunk(
                    held.audio, held.sample_rate, held.response_id, held.seq, text)))
                self._held = None
            answer.unit_answered = closes_unit
        elif kind == "response.listen":
            decision = Decision.END_OF_TURN if self._end_pending else Decision.LISTEN
            self._end_pending = False
            answer.outputs.append(Output(decision=decision))
            answer.unit_answered = closes_unit
            answer.turn_answered = True
        elif kind == "response.done":
            wire_id = str(event.get("response_id") or "")
            rid = self.ids.get(wire_id)
            response = event.get("response") if isinstance(event.get("response"), dict) else {}
            if response.get("status") == "cancelled":
                self.cancelled.append(wire_id)
                del self.cancelled[:-16]
            if response.get("status") == "completed" and rid is not None:
                self._end_pending = True
                self.completed.append((wire_id, self.played_ms(rid)))
            if rid == self.current:
                self.current = None
            answer.turn_answered = True
        elif kind == "error":
            code, message = wire.error_text(event)
            raise BackendError(f"the server reported an error: {message}",
                               hint=f"server code {code}" if code else "")
        return answer

    def flush(self) -> list[Output]:
        """Speech still waiting for a transcript that will not come (vLLM-Omni's order)."""
        if self._held is None:
            return []
        held, self._held = self._held, None
        return [Output(speech=held)]

    def end_now(self) -> list[Output]:
        """A completed response's END_OF_TURN that no listening frame carried (turn-based)."""
        if not self._end_pending:
            return []
        self._end_pending = False
        return [Output(decision=Decision.END_OF_TURN)]

    def played_ms(self, rid: int) -> float:
        return sum(piece.ms for piece in self.ledger.get(rid, ()))

    def heard_ms(self, rid: int, heard_text: str) -> float:
        """How long the chunks of `rid` whose text was all heard last, in ms."""
        total, said = 0.0, ""
        for piece in self.ledger.get(rid, ()):
            # Past the last word heard nothing is known to have played: stop there.
            if len(said) >= len(heard_text) or len(said) + len(piece.text) > len(heard_text):
                break
            said += piece.text
            total += piece.ms
        return total
