"""A backend's outputs, read as the duplex wire's response events.

A native-duplex backend yields, per frame, a decision, maybe text, and a speech chunk
whether it speaks or listens (app/model/contract.py). On the wire a response is one run
of speech: it opens (`response.created`, `response.speak`) at the first SPEAK of a new
response id, carries that run's chunks as audio deltas (each with its transcript
delta), and closes (`response.output_audio.done`, `response.done`) at END_OF_TURN, at
the next run, or cancelled at a barge-in. A frame outside any run is a
`response.listen` beat (its quiet audio is not sent: the client fills silence).

A turn-based backend answers a committed turn with speech chunks of one id: they open a
response at the first chunk and the response closes when the step ends; a committed
turn that brings no speech is a `response.listen`.

The projector only builds events; the served session numbers and sends them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.model.contract import Decision, Output, SpeechChunk
from app.model.remote import wire


class Projector:
    def __init__(self, native: bool, out_rate: int, resample=None) -> None:
        self.native = native
        self.out_rate = out_rate
        self._resample = resample  # a stream resampler to the wire's 24 kHz, or None
        self._count = 0
        self._active: tuple[int, str] | None = None  # (backend id, wire id)
        self._cancelled: set[int] = set()
        self._decision: Decision | None = None
        self._texts: list[str] = []
        self._spoke_this_step = False
        # Wire id -> (audio end in ms, text) per delta: what a playback ack means in words.
        self.ledger: dict[str, list[tuple[int, str]]] = {}

    def heard_text(self, response_id: str, played_ms: float) -> str:
        """The text of a response's deltas that had fully played by `played_ms`."""
        return "".join(text for end, text in self.ledger.get(response_id, ())
                       if end <= played_ms)

    @property
    def active_id(self) -> str | None:
        return self._active[1] if self._active else None

    # ---------------------------------------------------------------- a step
    def feed(self, out: Output, unit_seconds: float) -> list[dict[str, Any]]:
        """Events for one output of the step in progress (maybe none yet)."""
        if out.decision is not None:
            if out.decision is Decision.END_OF_TURN and self.native:
                events = self._close("completed", "end_of_turn")
                self._decision = Decision.LISTEN
                return events
            self._decision = out.decision
        if out.text:
            self._texts.append(out.text)
        if out.speech is None:
            return []
        return self._frame(out.speech)

    def end_step(self, unit_seconds: float, turn_ended: bool, unit_index: int
                 ) -> list[dict[str, Any]]:
        """Events that close the step: a frame left without speech, the turn's end."""
        events: list[dict[str, Any]] = []
        if self.native and (self._decision is not None or self._texts
                            or not self._spoke_this_step):
            # No speech for this step (a text-only family): silence stands in for it.
            rid = self._active[0] if self._active else -1 - self._count
            silence = np.zeros(round(unit_seconds * self.out_rate), np.float32)
            events += self._frame(SpeechChunk(silence, self.out_rate, rid, 0))
        if not self.native:
            if self._active is not None:
                events += self._close("completed", "turn_done")
            elif turn_ended and not self._spoke_this_step:
                events.append(self._listen("turn_committed"))
        self._spoke_this_step = False
        self._decision, self._texts = None, []
        return events

    def cancel(self, reason: str = "barge_in") -> list[dict[str, Any]]:
        """The answer in progress stops now; what it still yields is not sent."""
        if self._active is None:
            return []
        rid, wid = self._active
        self._cancelled.add(rid)
        return [{"type": "output_audio_buffer.cleared", "response_id": wid},
                *self._close("cancelled", reason)]

    # ---------------------------------------------------------------- internals
    def _frame(self, chunk: SpeechChunk) -> list[dict[str, Any]]:
        decision, text = self._decision, "".join(self._texts)
        self._decision, self._texts = None, []
        self._spoke_this_step = True
        events: list[dict[str, Any]] = []
        rid = chunk.response_id
        if rid in self._cancelled:
            return [self._listen("cancelled")] if self.native else []
        speaks = decision is Decision.SPEAK or not self.native
        if speaks and (self._active is None or self._active[0] != rid):
            events += self._close("completed", "new_response")
            events += self._open(rid)
        if self._active is not None and self._active[0] == rid:
            events += self._audio(chunk, text, model_speak=speaks)
        else:
            events.append(self._listen("model_listen"))
        return events

    def _open(self, rid: int) -> list[dict[str, Any]]:
        self._count += 1
        wid = f"resp_{self._count}"
        self._active = (rid, wid)
        return [
            {"type": "response.created", "response_id": wid,
             "response": {"id": wid, "object": "realtime.response",
                          "status": "in_progress", "output": []}},
            {"type": "response.speak", "response_id": wid, "item_id": f"item_{wid}"},
        ]

    def _audio(self, chunk: SpeechChunk, text: str, model_speak: bool) -> list[dict[str, Any]]:
        assert self._active is not None
        wid = self._active[1]
        audio = np.asarray(chunk.audio, np.float32)
        if self._resample is not None:
            audio = self._resample(audio)
        text = text or chunk.text_span
        ledger = self.ledger.setdefault(wid, [])
        end = (ledger[-1][0] if ledger else 0) + round(1000 * len(audio) / wire.OUTPUT_RATE)
        ledger.append((end, text))
        while len(self.ledger) > 16:  # only recent answers can still be acknowledged
            del self.ledger[next(iter(self.ledger))]
        return [
            {"type": "response.output_audio.delta", "response_id": wid,
             "item_id": f"item_{wid}", "delta": wire.b64(wire.pcm16_bytes(audio)),
             "format": "pcm16", "sample_rate_hz": wire.OUTPUT_RATE,
             "metadata": {"model_speak": model_speak, "end_of_turn": False,
                          "audio_duration_ms": round(1000 * len(audio) / wire.OUTPUT_RATE)}},
            {"type": "response.output_audio_transcript.delta", "response_id": wid,
             "item_id": f"item_{wid}", "delta": text},
        ]

    def _close(self, status: str, reason: str) -> list[dict[str, Any]]:
        if self._active is None:
            return []
        _, wid = self._active
        self._active = None
        return [
            {"type": "response.output_audio.done", "response_id": wid},
            {"type": "response.done", "response_id": wid,
             "response": {"id": wid, "object": "realtime.response", "status": status,
                          "status_details": {"type": status, "reason": reason}}},
        ]

    @staticmethod
    def _listen(reason: str) -> dict[str, Any]:
        return {"type": "response.listen",
                "response": {"object": "realtime.response", "status": "listening",
                             "metadata": {"reason": reason}}}


def mark_unit(events: list[dict[str, Any]], unit_index: int) -> None:
    """Mark a native step's last decision-bearing event as closing unit `unit_index`."""
    for event in reversed(events):
        if (event["type"] in wire.AUDIO_DELTAS or event["type"] in wire.TRANSCRIPT_DELTAS
                or event["type"] == "response.listen"):
            event.setdefault("metadata", {})["unit_done"] = unit_index
            return
