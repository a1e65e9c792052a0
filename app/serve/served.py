"""One conversation served over the duplex wire: audio in, the backend stepped, events out.

The session outlives its socket: when the connection drops, it waits `grace_s` for the
client to resume (`session.resume` with its token), keeps stepping what it already
received, and keeps every event it sends in a journal until the client acknowledges
it, so a resumed client gets what it missed. All of it runs on the server's event
loop; the backend steps on a worker thread, one unit at a time, its outputs coming back
to the loop as they are produced (a turn-based answer streams while it is made).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.flow.resample import StreamResampler
from app.model.contract import Backend, Control, Output, Unit, VideoFrame
from app.model.remote import wire
from app.serve.projector import Projector, mark_unit

log = logging.getLogger(__name__)

JOURNAL_LIMIT = 8192  # events kept for a resume; past it the client must start anew


def _decode_frame(text: str, seq: int, t: float) -> VideoFrame | None:
    """A bare base64 JPEG/PNG as an RGB frame; None when it does not decode."""
    import cv2

    try:
        data = np.frombuffer(wire.unb64(text), np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except (ValueError, cv2.error):
        return None
    if bgr is None:
        return None
    return VideoFrame(pixels=np.ascontiguousarray(bgr[:, :, ::-1]), t=t, seq=seq)


class ServedSession:
    def __init__(self, session_id: str, backend: Backend, model: str,
                 on_end: Callable[[ServedSession], None]) -> None:
        self.id = session_id
        self.backend = backend
        self.model = model
        self.incarnation = 0
        self.attachment = 0
        self.resume_token = secrets.token_urlsafe(24)
        self.socket: Any = None
        self.closed = False
        self._on_end = on_end
        self._seq = 0
        self._journal: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self._journal_gap = False
        spec = backend.spec
        self.native = spec.native_duplex
        self.unit_samples = round(spec.unit_ms * spec.audio_in_rate / 1000)
        self._in = StreamResampler(wire.INPUT_RATE, spec.audio_in_rate)
        out = None
        if spec.audio_out_rate != wire.OUTPUT_RATE:
            out = StreamResampler(spec.audio_out_rate, wire.OUTPUT_RATE).process
        self.projector = Projector(self.native, spec.audio_out_rate, out)
        self._buffer = np.zeros(0, np.float32)
        self._taken = self._made = 0  # input samples taken, resampled samples made
        # Unit index -> when its last sample arrived: each answer says how long the server
        # took since (metadata.server_ms), so a client can tell the network's share.
        self._received_at: dict[int, float] = {}
        self._frames: list[VideoFrame] = []
        self._received_ms = 0.0  # audio_end_ms of the last append taken
        self._unit_index = 0
        self._held: Unit | None = None  # turn-based: the last full unit, until we know
        self._pending = Control()
        self._work: asyncio.Queue[tuple[Unit, Control] | str | None] = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work_loop())
        self._expiry: asyncio.TimerHandle | None = None
        self.played: dict[str, int] = {}  # response id -> ms acknowledged as played

    # ---------------------------------------------------------------- events out
    def capabilities(self) -> dict[str, Any]:
        spec = self.backend.spec
        return {
            "implementation_level": wire.NATIVE if self.native else wire.TURN_BASED,
            "chunk_period_ms": spec.unit_ms,
            "supports_input_append": True,
            "supports_barge_in": True,
            "supports_session_resume": True,
            "supports_audio_truncate": False,
            "video_input": spec.frames_per_unit > 0,
            "input_modes": ["append_audio_chunk"]
                           + (["video_frames"] if spec.frames_per_unit > 0 else []),
            "family": spec.family,
            "marks_units": True,  # metadata.unit_done closes each unit (wire.py)
        }

    def describe(self, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "realtime.session", "type": "realtime", "id": self.id,
            "model": self.model, "state": "open",
            "modalities": ["audio", "text"],
            "instructions": config.get("instructions"),
            "voice": config.get("voice"),
            "input_audio_format": "pcm16", "output_audio_format": "pcm16",
            "audio": {"input": {"sample_rate_hz": wire.INPUT_RATE},
                      "output": {"sample_rate_hz": wire.OUTPUT_RATE}},
            "turn_detection": None,
            "capabilities": self.capabilities(),
        }

    async def emit(self, event: dict[str, Any]) -> None:
        self._seq += 1
        event["server_event_seq"] = self._seq
        self._journal.append((self._seq, event))
        while len(self._journal) > JOURNAL_LIMIT:
            self._journal.popleft()
            self._journal_gap = True
        await self._send(event)

    async def _send(self, event: dict[str, Any]) -> None:
        socket = self.socket
        if socket is None:
            return
        try:
            await socket.send(wire.encode(event))
        except Exception:  # the socket is gone; the handler detaches it
            log.debug("send to a dropped socket", exc_info=True)

    def acknowledge(self, seq: int) -> None:
        while self._journal and self._journal[0][0] <= seq:
            self._journal.popleft()

    # ---------------------------------------------------------------- sockets
    def attach(self, socket: Any) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.socket = socket
        self.attachment += 1

    def detach(self, socket: Any, grace_s: float) -> None:
        """The socket dropped: keep the session `grace_s` for a resume, then end it."""
        if self.socket is not socket or self.closed:
            return
        self.socket = None
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(grace_s, lambda: loop.create_task(self.end("expired")))

    async def resume(self, socket: Any, last_seq: int) -> bool:
        """Attach a new socket and send what it missed; False when that is lost."""
        if self._journal_gap and (not self._journal or self._journal[0][0] > last_seq + 1):
            await socket.send(wire.encode({"type": "session.resync_required",
                                           "session_id": self.id, "reason": "journal_gap"}))
            return False
        old = self.socket
        self.attach(socket)
        if old is not None and old is not socket:
            try:
                await old.send(wire.encode({"type": "session.replaced", "session_id": self.id}))
                await old.close()
            except Exception:
                pass
        self.resume_token = secrets.token_urlsafe(24)
        await socket.send(wire.encode({
            "type": "session.resumed", "session_id": self.id,
            "incarnation": self.incarnation, "attachment_generation": self.attachment,
            "resume_token": self.resume_token}))
        for seq, event in list(self._journal):
            if seq > last_seq:
                await self._send(event)
        return True

    async def end(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        self.backend.interrupt()
        await self._work.put(None)
        try:
            await asyncio.wait_for(self._worker, 30)
        except (TimeoutError, Exception):
            log.warning("the served session's worker did not stop in time")
        if reason == "expired":
            await self._send({"type": "session.expired", "session_id": self.id,
                              "reason": "disconnect_grace_expired"})
        self._on_end(self)

    # ---------------------------------------------------------------- input
    async def append(self, event: dict[str, Any]) -> None:
        end_ms = event.get("audio_end_ms")
        if isinstance(end_ms, (int, float)) and end_ms <= self._received_ms:
            return  # sent again after a resume: already taken
        try:
            pcm = wire.unb64(str(event.get("audio") or ""))
        except ValueError:
            await self.emit(wire.error("invalid_audio", "audio is not base64 PCM16"))
            return
        rate = event.get("sample_rate_hz", wire.INPUT_RATE)
        if rate != wire.INPUT_RATE:
            await self.emit(wire.error("unsupported_sample_rate",
                                       f"input audio must be {wire.INPUT_RATE} Hz PCM16"))
            return
        samples = wire.pcm16_samples(pcm)
        self._received_ms = (float(end_ms) if isinstance(end_ms, (int, float))
                             else self._received_ms + 1000 * len(samples) / wire.INPUT_RATE)
        for text in event.get("video_frames") or ():
            frame = _decode_frame(str(text), len(self._frames), self._received_ms / 1000)
            if frame is not None:
                self._frames.append(frame)
        if event.get("force_listen"):
            self._pending = Control(self._pending.turn_ended, self._pending.barge_in, True)
        self._taken += len(samples)
        resampled = self._in.process(samples)
        self._made += len(resampled)
        # The resampler holds back a few samples to look ahead; start the stream that
        # much later instead, so a unit closes when its last input sample arrives.
        owed = self._taken * self.backend.spec.audio_in_rate // wire.INPUT_RATE - self._made
        if owed > 0:
            resampled = np.concatenate([np.zeros(owed, np.float32), resampled])
            self._made += owed
        self._buffer = np.concatenate([self._buffer, resampled])
        while len(self._buffer) >= self.unit_samples:
            audio, self._buffer = (self._buffer[:self.unit_samples],
                                   self._buffer[self.unit_samples:])
            await self._unit_ready(self._unit(audio))

    def _unit(self, audio: np.ndarray) -> Unit:
        spec = self.backend.spec
        frames = tuple(self._frames[-spec.frames_per_unit:]) if spec.frames_per_unit else ()
        self._frames.clear()
        duration = len(audio) / spec.audio_in_rate
        unit = Unit(self._unit_index, self._unit_index * spec.unit_ms / 1000, duration,
                    spec.audio_in_rate, np.ascontiguousarray(audio, np.float32), frames)
        self._unit_index += 1
        self._received_at[unit.index] = time.monotonic()
        return unit

    async def _unit_ready(self, unit: Unit) -> None:
        if self.native:
            control, self._pending = self._pending, Control()
            await self._work.put((unit, control))
            return
        # Turn-based: a unit is prefilled once the next one arrives, so the unit that a
        # commit closes can still be told the turn ended.
        if self._held is not None:
            await self._work.put((self._held, Control()))
        self._held = unit

    async def commit(self) -> None:
        if self.native:
            self._pending = Control(True, self._pending.barge_in, self._pending.force_listen)
            return
        unit = self._held
        self._held = None
        if unit is None and len(self._buffer):
            unit, self._buffer = self._unit(self._buffer), np.zeros(0, np.float32)
        if unit is None:
            for event in self.projector.end_step(0.0, True, self._unit_index):
                await self.emit(event)
            return
        await self._work.put((unit, Control(turn_ended=True)))

    async def barge_in(self) -> None:
        self.backend.interrupt()
        self._pending = Control(self._pending.turn_ended, True, self._pending.force_listen)
        for event in self.projector.cancel("barge_in"):
            await self.emit(event)

    async def playback_ack(self, event: dict[str, Any]) -> None:
        """What the client played; after an interruption the model is told what was heard."""
        rid = str(event.get("response_id") or self.projector.active_id or "")
        played = event.get("played_ms")
        if not rid or not isinstance(played, (int, float)):
            await self.emit(wire.error("invalid_playback_ack",
                                       "playback.ack needs response_id and played_ms"))
            return
        self.played[rid] = int(played)
        truncate = bool(event.get("truncate"))
        if truncate:
            await self._work.put(self.projector.heard_text(rid, played))
        await self.emit({"type": "playback.acknowledged", "event": {
            "type": "playback.acknowledged", "session_id": self.id, "item_id": f"item_{rid}",
            "response_id": rid, "played_ms": int(played),
            "committed_ms": int(event.get("committed_ms", played)), "truncate": truncate,
            "history_committed": True}})

    # ---------------------------------------------------------------- the model
    def _stamp(self, event: dict[str, Any], unit_index: int) -> None:
        received = self._received_at.get(unit_index)
        if received is not None and (event["type"] in wire.AUDIO_DELTAS
                                     or event["type"] == "response.listen"):
            meta = event.setdefault("metadata", {})
            meta["server_ms"] = round(1000 * (time.monotonic() - received), 2)

    async def _work_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._work.get()
            if item is None:
                return
            if isinstance(item, str):  # what was heard of an interrupted answer
                await asyncio.to_thread(self.backend.heard, item)
                continue
            unit, control = item
            outputs: asyncio.Queue[Output | BaseException | None] = asyncio.Queue()

            def run(unit: Unit = unit, control: Control = control,
                    outputs: asyncio.Queue = outputs) -> None:
                try:
                    for out in self.backend.step(unit, control):
                        loop.call_soon_threadsafe(outputs.put_nowait, out)
                except BaseException as exc:  # reported on the loop below
                    loop.call_soon_threadsafe(outputs.put_nowait, exc)
                loop.call_soon_threadsafe(outputs.put_nowait, None)

            started = time.perf_counter()
            thread = loop.run_in_executor(None, run)
            # A native unit's events go out together, the last one marked as closing the
            # unit; a turn-based answer streams as it is made.
            held: list[dict[str, Any]] = []
            while (out := await outputs.get()) is not None:
                if isinstance(out, BaseException):
                    log.error("the model failed on unit %d: %s", unit.index, out)
                    await self.emit(wire.error("model_failed", f"the model failed: {out}",
                                               "server_error"))
                    continue
                for event in self.projector.feed(out, unit.duration):
                    if self.native:
                        held.append(event)
                    else:
                        self._stamp(event, unit.index)
                        await self.emit(event)
            await thread
            held += self.projector.end_step(unit.duration, control.turn_ended, unit.index)
            if self.native:
                mark_unit(held, unit.index)
            for event in held:
                self._stamp(event, unit.index)
                await self.emit(event)
            self._received_at.pop(unit.index, None)
            log.debug("unit %d stepped in %.3f s", unit.index, time.perf_counter() - started)
