"""RemoteBackend: a model on another machine, behind the same contract as a local one.

The server is a vLLM-Omni deployment or `duetto serve`, spoken to over the duplex wire
(wire.py). Capture, echo cancellation, turn detection, playback and the recording stay
here; each unit's 16 kHz audio (and its camera frame, where the model takes frames) goes
up, the model's decisions, text and 24 kHz speech come down.

What the server's capabilities decide (read at load):

* `implementation_level` "model_native_duplex": the model answers every unit
  (`chunk_period_ms`) with listen or speech; `step()` waits for that unit's answer and
  the session reads it as a local native family's.
* anything else: turn-based; `step()` only sends the unit, and a unit that ends the
  user's turn is committed and its answer streamed from `step()`.

Barge-in: `Control(barge_in=True)` or `interrupt()` sends `barge_in` at once (the server
stops the answer and mutes the model); `heard()` sends a truncating `playback.ack` with
the part of the interrupted answer that was heard. A completed answer is acknowledged
as played in full when it ends.

Faults: a refused token, an address where nothing answers, a server that never opens
the session, an error the server reports, all raise BackendError with what to do. A
connection lost mid-answer is resumed on a new socket (the server replays what was
missed; nothing of the conversation is lost); when the server cannot be reached, the
step raises once, the following steps yield nothing while it retries every
`retry_s`, and when the server is back but has forgotten the session (it restarted), a
new session is opened with the same persona and the step says so.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.model.contract import (
    BackendError,
    BackendSpec,
    Control,
    Decision,
    ModelSource,
    Output,
    Persona,
    Progress,
    Quant,
    Unit,
)
from app.model.remote import wire
from app.model.remote.answers import AnswerReader
from app.model.remote.frames import FrameSchedule
from app.model.remote.link import LOST, Link, SessionGone

log = logging.getLogger(__name__)

FAMILY = "remote"
# The player's cushion for a server's speech. Over loopback, with `duetto serve` on the
# same 2-core machine, Moshi's 80 ms frames came 0.04 s after their unit's end at the
# median and up to 0.18 s at worst: a local step's 150 ms cushion ran dry about once a
# minute, at the first such spike of a conversation (the player doubles its cushion after
# one). A network only adds jitter: the cushion starts where that first spike put it.
NETWORK_CUSHION_MS = 300


def _jpeg_b64(pixels: np.ndarray) -> str | None:
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(pixels[:, :, ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    return wire.b64(data.tobytes()) if ok else None


class _StillAway(BackendError):
    """A fault already reported in this outage: the step yields nothing, says nothing."""


class RemoteBackend:
    def __init__(self, *, address: str = "", model: str = "", token: str | None = None,
                 connect_timeout_s: float = 10.0, answer_timeout_s: float = 15.0,
                 retry_s: float = 1.0, unit_ms: int | None = None,
                 device: str | None = None) -> None:
        del device  # the server's choice
        self.address = address
        self.model = model
        self.token = token
        self.connect_timeout_s = connect_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.retry_s = retry_s
        self._unit_ms = unit_ms
        # The input format the model's deployment takes, until the session states it.
        self.input_format = wire.preset_input(model)
        # Until load() reads the server's capabilities: a native model with 1 s units.
        self.spec = BackendSpec(family=FAMILY, unit_ms=unit_ms or 1000,
                                audio_in_rate=self.input_format.rate,
                                audio_out_rate=wire.OUTPUT_RATE, frames_per_unit=0,
                                native_duplex=True, playback_cushion_ms=NETWORK_CUSHION_MS)
        self.link: Link | None = None
        self.server_family = ""
        self.notice = ""  # the last fault message, for the window
        self._persona: Persona | None = None
        self._reader = AnswerReader()
        self._sent_ms = 0.0
        self._units_sent = 0
        self._frames = FrameSchedule(unit_ms or 1000)
        self._send_lock = threading.Lock()
        self._down_since: float | None = None
        self._next_retry = 0.0
        self._interrupted: int | None = None
        self._reported = False  # this outage was reported (once is enough)
        # Per answered unit (native) or answered turn: the round trip minus the server's
        # own time (metadata.server_ms), in ms: what the network hop adds.
        self.hops_ms: collections.deque[float] = collections.deque(maxlen=100_000)
        self._sent_at = 0.0
        # Playback as the session reports it (played()): wire id -> ms acknowledged.
        self._acked: dict[str, int] = {}
        self._ack_lock = threading.Lock()
        self._follows_playback = False  # a session reports playback: no guessing
        self._turn_from = 1  # turn-based: our id of the first answer to the last commit

    # ---------------------------------------------------------------- lifecycle
    def load(self, source: ModelSource, quant: Quant, progress: Progress) -> None:
        """Connect and learn what the server runs (nothing is loaded here)."""
        del quant
        if not self.address and source.hub_id and "://" in source.hub_id:
            self.address = source.hub_id
        if not self.address:
            raise BackendError("no server address", hint="set one in Settings → Model")
        progress(f"connecting to {self.address}", 0.0)
        session = self._open(None)
        caps = self.link.capabilities if self.link else {}
        progress(f"connected: {self.describe()}", 1.0)
        log.info("remote model %s at %s: %s", session.get("model"), self.address, caps)

    def _session_config(self, persona: Persona | None) -> dict[str, Any]:
        asked = wire.preset_input(self.model)
        config: dict[str, Any] = {
            "model": self.model, "modalities": ["audio", "text"],
            "input_audio_format": asked.encoding, "output_audio_format": "pcm16",
            "sample_rate_hz": asked.rate,
            "audio": {"input": {"format": wire.format_object(asked),
                                "sample_rate_hz": asked.rate},
                      "output": {"sample_rate_hz": wire.OUTPUT_RATE}},
            "turn_detection": None,
            # The model's memory of its answers follows what was heard (playback.ack).
            "playback_commit_policy": "ack_only",
            "extra_body": {"auto_response": True, "native_duplex": True},
        }
        if persona is not None:
            config["instructions"] = persona.role_prompt
            if persona.voice.builtin:
                config["voice"] = persona.voice.builtin
            elif persona.voice.reference_audio is not None:
                # The voice to clone rides as a data URL (vLLM-Omni's MiniCPM-o needs one).
                path = Path(persona.voice.reference_audio).expanduser()
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise BackendError(f"the voice recording {path} cannot be read ({exc})",
                                       hint="pick another recording for the persona") from None
                config["ref_audio"] = f"data:audio/wav;base64,{wire.b64(data)}"
        return config

    def _open(self, persona: Persona | None) -> dict[str, Any]:
        if self.link is not None:  # one conversation at a time: end the last one first
            self.link.close()
        self.link = Link(self.address, self.model, self.token, self.connect_timeout_s)
        session = self.link.open(self._session_config(persona))
        try:  # what the server decodes: its word over the preset we asked with
            self.input_format = wire.stated_input(session, wire.preset_input(self.model))
        except ValueError as exc:
            self.link.close()
            raise BackendError(str(exc),
                               hint="ask the server for pcm16 or pcm_f32le input") from None
        caps = self.link.capabilities
        native = caps.get("implementation_level", wire.NATIVE) == wire.NATIVE
        unit_ms = int(caps.get("chunk_period_ms") or self._unit_ms or 1000)
        video = bool(caps.get("video_input")) or "video_frames" in (caps.get("input_modes") or ())
        if not video and "minicpm-o" in str(session.get("model", "")).lower():
            video = True  # vLLM-Omni feeds MiniCPM-o's frames and names no capability
        self.server_family = str(caps.get("family") or session.get("model") or "")
        # The session hands us units at the server's input rate (it resamples the mic).
        self.spec = BackendSpec(family=FAMILY, unit_ms=unit_ms,
                                audio_in_rate=self.input_format.rate,
                                audio_out_rate=wire.OUTPUT_RATE,
                                frames_per_unit=1 if video else 0, native_duplex=native,
                                playback_cushion_ms=NETWORK_CUSHION_MS)
        self._reader = AnswerReader(marks_units=bool(caps.get("marks_units")),
                                    first_id=self._reader.last_id + 1)
        self._sent_ms = 0.0
        self._units_sent = 0
        first = caps.get("first_unit_ms")
        self._frames = FrameSchedule(unit_ms, first if isinstance(first, int) else None)
        return session

    def describe(self) -> str:
        """What the server runs, in one line (the connection test shows it)."""
        link = self.link
        if link is None:
            return "not connected"
        caps = link.capabilities
        kind = "native duplex" if self.spec.native_duplex else "turn-based"
        rtt = f", handshake {1000 * link.rtt_s:.0f} ms" if link.rtt_s is not None else ""
        model = link.session.get("model") or self.model or "a model"
        return (f"{model} ({self.server_family or 'unknown family'}, {kind}, "
                f"{caps.get('chunk_period_ms', '?')} ms units"
                f"{', sees the camera' if self.spec.frames_per_unit else ''}, "
                f"{self.input_format.describe()} in{rtt})")

    def network_figures(self) -> dict[str, float] | None:
        """What the network adds, for the window: the session's handshake round trip and
        the last answers' hop (round trip less the server's own time), in ms."""
        link = self.link
        if link is None or link.rtt_s is None:
            return None
        figures = {"handshake_ms": 1000 * link.rtt_s}
        recent = list(self.hops_ms)[-50:]
        if recent:
            figures["hop_median_ms"] = float(np.median(recent))
            figures["hop_p90_ms"] = float(np.percentile(recent, 90))
        return figures

    def start(self, persona: Persona) -> None:
        """A new conversation on the server, with this persona."""
        self._persona = persona
        self._open(persona)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    # ---------------------------------------------------------------- sending
    def _unit_events(self, unit: Unit, control: Control) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if control.barge_in:
            events.append({"type": "barge_in"})
        self._sent_ms += 1000 * len(unit.audio) / unit.sample_rate
        append: dict[str, Any] = {
            "type": "input_audio_buffer.append",
            "audio": wire.b64(self.input_format.encode(unit.audio)),
            "format": self.input_format.encoding, "sample_rate_hz": self.input_format.rate,
            "duration_ms": round(1000 * len(unit.audio) / unit.sample_rate),
            "audio_end_ms": round(self._sent_ms, 3),
        }
        if control.force_listen:
            append["force_listen"] = True
        # The unit's newest frame, on the append that closes a model unit (frames.py).
        if (self.spec.frames_per_unit and self._frames.closes_unit(self._sent_ms)
                and unit.frames):
            frames = [f for f in (_jpeg_b64(fr.pixels) for fr in unit.frames[-1:]) if f]
            if frames:
                append["video_frames"] = frames
        events.append(append)
        if control.turn_ended:
            events.append({"type": "input_audio_buffer.commit", "final": True})
        return events

    def _send_all(self, events: list[dict[str, Any]]) -> bool:
        link = self.link
        with self._send_lock:
            return link is not None and all(link.send(e) for e in events)

    # ---------------------------------------------------------------- stepping
    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        if self._persona is None or self.link is None:
            raise BackendError("no conversation", hint="call start(persona) first")
        if unit.sample_rate != self.input_format.rate:
            raise BackendError(f"the server takes {self.input_format.rate} Hz units, "
                               f"got {unit.sample_rate} Hz")
        if self._down_since is not None and (time.monotonic() < self._next_retry
                                             or not self._reconnect()):
            return iter(self._end_cut_answer())  # still away: said once already
        self._interrupted = None
        events = self._unit_events(unit, control)
        index = self._units_sent
        self._units_sent += 1
        self._sent_at = time.monotonic()
        try:
            if not self._send_all(events):
                self._recover(events, "while sending")
            if self.spec.native_duplex:
                # Waits here for the unit's answer (a few ms to a unit): the session times
                # step() as its compute, and for a remote model that is the round trip.
                return iter(list(self._read(index, events, turn=False)))
        except _StillAway:
            return iter(())
        if control.turn_ended:
            self._turn_from = self._reader.last_id + 1
            return self._quietly(self._read(index, events, turn=True))
        return iter(())

    def _end_cut_answer(self) -> list[Output]:
        """An answer the server went away in the middle of is over: say so, once."""
        if self._reader.current is None:
            return []
        self._reader.current = None
        return [Output(decision=Decision.END_OF_TURN)]

    @staticmethod
    def _quietly(outputs: Iterator[Output]) -> Iterator[Output]:
        try:
            yield from outputs
        except _StillAway:
            return

    def _read(self, index: int, sent: list[dict[str, Any]], turn: bool) -> Iterator[Output]:
        deadline = time.monotonic() + self.answer_timeout_s
        while True:
            assert self.link is not None
            event = self.link.next_event(deadline - time.monotonic())
            if event is None:
                # Stuck, or a connection that died without a word: let go of the socket
                # (the server keeps the session) and come back when it answers, rather
                # than wait this long again for every unit.
                self.link.drop()
                self._went_away("mid-answer", f"it did not answer within "
                                              f"{self.answer_timeout_s:g} s")
            if event["type"] == LOST:
                if self.link.is_current_loss(event):
                    self._recover(sent, "mid-answer")
                    deadline = time.monotonic() + self.answer_timeout_s
                continue
            if event["type"] in ("session.expired", "session.closed"):
                self._recover(sent, "mid-answer", forgotten=True)
                continue
            answer = self._reader.read(event, index)
            self._note_hop(event, first_audio=turn)
            if answer.unit_answered or answer.turn_answered:
                self._reported = False  # it answers again: the next fault is news
            yield from answer.outputs
            self._acknowledge_completed()
            if turn and answer.turn_answered and self._reader.current is None:
                yield from self._reader.end_now()
                return
            if not turn and answer.unit_answered:
                if not self._reader.marks_units:
                    # Without marks the audio delta answers the unit, before its text.
                    yield from self._reader.flush()
                return

    def _note_hop(self, event: dict[str, Any], first_audio: bool) -> None:
        meta = event.get("metadata")
        server_ms = meta.get("server_ms") if isinstance(meta, dict) else None
        if not isinstance(server_ms, (int, float)) or self._sent_at == 0.0:
            return
        if first_audio and event["type"] not in wire.AUDIO_DELTAS:
            return
        self.hops_ms.append(1000 * (time.monotonic() - self._sent_at) - server_ms)
        self._sent_at = 0.0  # one hop per unit (native) or per answer (turn-based)

    def _acknowledge_completed(self) -> None:
        """Without a session reporting playback (played()), a completed answer is taken
        as played in full, so the server's memory keeps it."""
        while self._reader.completed:
            wire_id, ms = self._reader.completed.pop(0)
            if self._follows_playback:
                continue
            self._send_all([{"type": "playback.ack", "response_id": wire_id,
                             "item_id": f"item_{wire_id}", "played_ms": int(ms),
                             "committed_ms": int(ms)}])

    # ---------------------------------------------------------------- faults
    def _recover(self, unsent: list[dict[str, Any]], when: str,
                 forgotten: bool = False) -> None:
        """Resume after a drop and send `unsent` again; raise when that fails."""
        assert self.link is not None
        if not forgotten:
            try:
                self.link.resume(self.connect_timeout_s)
                if self._send_all(unsent):  # the server drops what it already has
                    self.notice = ""
                    return
            except SessionGone:
                forgotten = True
            except BackendError as exc:
                self._went_away(when, str(exc))
        if forgotten:
            self._new_session(when)
        self._went_away(when, "the connection dropped again")

    def _went_away(self, when: str, why: str) -> None:
        self._down_since = time.monotonic()
        self._next_retry = self._down_since + self.retry_s
        if self._reported:
            raise _StillAway(self.notice)
        self._reported = True
        self.notice = (f"lost the connection to the server at {self.address} {when} "
                       f"({why}); the conversation is recorded up to here, and Duetto "
                       "reconnects on its own when the server is back")
        raise BackendError(self.notice)

    def _reconnect(self) -> bool:
        """While the server is away: one attempt to resume (or start anew)."""
        assert self.link is not None
        try:
            self.link.resume(min(self.connect_timeout_s, 2.0))
        except SessionGone:
            self._down_since = None
            self._new_session("while it was away")
        except BackendError:
            self._next_retry = time.monotonic() + self.retry_s
            return False
        self._down_since = None
        self.notice = ""
        return True

    def _new_session(self, when: str) -> None:
        """The server forgot the conversation (restarted): start a new one, and say so."""
        self._down_since = None
        try:
            self._open(self._persona)
        except BackendError as exc:
            self._went_away(when, str(exc))
        self.notice = (f"the server at {self.address} restarted {when}: a new conversation "
                       "was started on it, and the model no longer remembers what was said "
                       "before (the recording here keeps all of it)")
        raise BackendError(self.notice)

    # ---------------------------------------------------------------- playback
    def played(self, response_id: int, seconds: float) -> None:
        """How much of an answer reached the speaker (the session, a few times a second
        while it plays, from any thread): acknowledged to the server as vLLM-Omni's
        playback.ack, cumulative, only when it moved. Returns at once (the link's writer
        thread sends it)."""
        self._follows_playback = True
        link = self.link
        wire_id = self._reader.wire_ids.get(response_id)
        if wire_id is None or link is None:  # an answer of a session the server forgot
            return
        # Never more than the server sent of it (the session's silence after an answer
        # may carry its id).
        ms = int(min(1000 * seconds, self._reader.played_ms(response_id)))
        with self._ack_lock:
            if ms <= self._acked.get(wire_id, -1):
                return
            self._acked[wire_id] = ms
            while len(self._acked) > 16:
                del self._acked[next(iter(self._acked))]
        link.send_soon({"type": "playback.ack", "response_id": wire_id,
                        "item_id": f"item_{wire_id}", "played_ms": ms, "committed_ms": ms})

    def retract(self) -> None:
        """Turn-based: the session takes back the answer it started before the user's
        turn had surely ended (they went on; it was stopped with interrupt()). The server
        keeps none of it in the model's memory: a truncating playback.ack at 0 ms, as for
        an answer cut before a word was heard. The user's words stay, and what they say
        next joins them."""
        for rid, wire_id in list(self._reader.wire_ids.items()):
            if rid >= self._turn_from:
                self._acked[wire_id] = 0
                self._send_all([{"type": "playback.ack", "response_id": wire_id,
                                 "item_id": f"item_{wire_id}", "played_ms": 0,
                                 "committed_ms": 0, "truncate": True}])

    # ---------------------------------------------------------------- barge-in
    def interrupt(self) -> None:
        """Any thread: the server stops the answer in progress now."""
        self._interrupted = self._reader.current
        self._send_all([{"type": "barge_in"}])

    def heard(self, played_text: str) -> None:
        """Tell the server how much of the interrupted answer was heard."""
        rid = self._interrupted if self._interrupted is not None else self._reader.current
        if rid is None:
            rid = max(self._reader.wire_ids, default=None)
        if rid is None:
            return
        wire_id = self._reader.wire_ids.get(rid)
        if wire_id is None:
            return
        # The exact position when the session reported it; else the chunks whose words
        # were all heard.
        ms = self._acked.get(wire_id)
        if ms is None:
            ms = self._reader.heard_ms(rid, played_text)
        self._send_all([{"type": "playback.ack", "response_id": wire_id,
                         "item_id": f"item_{wire_id}", "played_ms": int(ms),
                         "committed_ms": int(ms), "truncate": True}])
