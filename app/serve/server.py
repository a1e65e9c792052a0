"""`duetto serve`'s WebSocket server: one loaded backend, one conversation at a time.

The route is `/v1/realtime?duplex=1` (app/model/remote/wire.py says what flows on it).
A token, when the server has one, is checked before the WebSocket upgrade: a request
without the right `Authorization: Bearer` header gets HTTP 401 and nothing else. The
model is loaded once; a second conversation while one is live is refused
(`duplex_session_busy`), but one whose client has gone (waiting for a resume) gives way
to a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import tempfile
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from app.model.contract import Backend, BackendError, Persona, Voice
from app.model.remote import wire
from app.serve.served import ServedSession

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 << 20  # a second of audio with a camera frame is far below this


class DuplexServer:
    def __init__(self, backend: Backend, model: str, *, host: str = "127.0.0.1",
                 port: int = 8099, token: str | None = None, grace_s: float = 30.0,
                 first_message_timeout_s: float = 30.0) -> None:
        if not wire.is_loopback(host) and not token:
            raise ValueError(f"serving on {host} lets other machines in: a token is "
                             "required (--token, or DUETTO_SERVE_TOKEN)")
        self.backend = backend
        self.model = model
        self.host = host
        self.port = port
        self.token = token or None
        self.grace_s = grace_s
        self.first_message_timeout_s = first_message_timeout_s
        self.sessions: dict[str, ServedSession] = {}
        self._server: Server | None = None
        self._sockets: set[ServerConnection] = set()
        self._voice_dir: tempfile.TemporaryDirectory | None = None

    async def start(self) -> int:
        """Listen; returns the port (useful when 0 asked for a free one)."""
        self._server = await serve(
            self._handle, self.host, self.port, process_request=self._check_request,
            max_size=MAX_MESSAGE, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            await session.end("server_stopped")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._voice_dir is not None:
            self._voice_dir.cleanup()

    async def drop_connections(self) -> None:
        """Cut every socket without a close handshake (a network drop; sessions stay)."""
        for socket in list(self._sockets):
            socket.transport.abort()

    # ---------------------------------------------------------------- handshake
    def _check_request(self, connection: ServerConnection, request: Request) -> Any:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != wire.PATH:
            return connection.respond(HTTPStatus.NOT_FOUND,
                                      f"only {wire.PATH}?duplex=1 is served here\n")
        query = dict(parse_qsl(parts.query))
        if query.get("duplex", "").lower() not in ("1", "true", "on"):
            return connection.respond(HTTPStatus.BAD_REQUEST,
                                      "this server speaks only the duplex dialect: "
                                      "add ?duplex=1\n")
        if self.token and not wire.token_matches(request.headers.get("Authorization"),
                                                 self.token):
            log.warning("refused a connection from %s: wrong or missing token",
                        connection.remote_address)
            return connection.respond(HTTPStatus.UNAUTHORIZED,
                                      "a valid token is required (Authorization: Bearer)\n")
        return None

    # ---------------------------------------------------------------- a socket
    async def _handle(self, ws: ServerConnection) -> None:
        self._sockets.add(ws)
        session: ServedSession | None = None
        try:
            first = wire.decode(await asyncio.wait_for(ws.recv(),
                                                       self.first_message_timeout_s))
            if first is None:
                await self._refuse(ws, "invalid_event", "send session.update first")
                return
            if first["type"] == "session.resume":
                session = await self._resume(ws, first)
            elif first["type"] == "session.update":
                session = await self._open(ws, first)
            else:
                await self._refuse(ws, "session_not_open",
                                   "open the session with session.update first")
            if session is None:
                return
            async for raw in ws:
                event = wire.decode(raw)
                if event is None:
                    await session.emit(wire.error("invalid_event", "not a JSON event"))
                    continue
                if await self._dispatch(session, ws, event):
                    return
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            self._sockets.discard(ws)
            if session is not None:
                session.detach(ws, self.grace_s)

    async def _refuse(self, ws: ServerConnection, code: str, message: str) -> None:
        await ws.send(wire.encode({"type": "error", "error": message, "code": code}))
        await ws.close()

    async def _open(self, ws: ServerConnection, first: dict[str, Any]) -> ServedSession | None:
        for other in list(self.sessions.values()):
            if other.socket is not None:
                await self._refuse(ws, "duplex_session_busy",
                                   "this server holds one conversation at a time "
                                   "(max_sessions=1) and one is live")
                return None
            await other.end("replaced")  # its client is gone: a new one takes its place
        config = first.get("session") if isinstance(first.get("session"), dict) else {}
        try:
            voice = self._voice(config)
            persona = Persona(name="served",
                              role_prompt=str(config.get("instructions") or ""), voice=voice)
            await asyncio.to_thread(self.backend.start, persona)
        except BackendError as exc:
            await self._refuse(ws, "invalid_session_config", str(exc))
            return None
        session_id = str(config.get("session_id") or f"sess_{secrets.token_hex(8)}")
        session = ServedSession(session_id, self.backend, self.model,
                                lambda s: self.sessions.pop(s.id, None))
        self.sessions[session_id] = session
        session.attach(ws)
        described = session.describe(config)
        await session.emit({"type": "session.created", "incarnation": session.incarnation,
                            "attachment_generation": session.attachment,
                            "resume_token": session.resume_token, "session": described})
        await session.emit({"type": "session.updated", "session": described})
        log.info("session %s opened", session_id)
        return session

    def _voice(self, config: dict[str, Any]) -> Voice:
        """A built-in voice by name, or `ref_audio` (a WAV as a data URL) to clone."""
        voice = config.get("voice")
        if isinstance(voice, str) and voice:
            return Voice(builtin=voice)
        ref = config.get("ref_audio")
        if not isinstance(ref, str) or not ref:
            return Voice()
        try:
            data = wire.unb64(ref)
        except ValueError:
            raise BackendError("ref_audio is not base64 audio") from None
        # The backend reads voices from files; this one lives as long as the server.
        self._voice_dir = self._voice_dir or tempfile.TemporaryDirectory(prefix="duetto-voice-")
        path = Path(self._voice_dir.name) / f"voice-{hashlib.sha256(data).hexdigest()[:16]}.wav"
        path.write_bytes(data)
        return Voice(reference_audio=path)

    async def _resume(self, ws: ServerConnection, first: dict[str, Any]
                      ) -> ServedSession | None:
        session = self.sessions.get(str(first.get("session_id")))
        if session is None or session.closed:
            await self._refuse(ws, "session_resume_expired",
                               f"Unknown or expired duplex session: {first.get('session_id')}")
            return None
        token = str(first.get("resume_token") or "")
        if (not secrets.compare_digest(token.encode(), session.resume_token.encode())
                or first.get("incarnation") != session.incarnation):
            await self._refuse(ws, "invalid_resume_token", "the resume token does not match")
            return None
        last = first.get("last_received_server_event_seq")
        if not await session.resume(ws, int(last) if isinstance(last, int) else 0):
            await ws.close()
            return None
        log.info("session %s resumed", session.id)
        return session

    async def _dispatch(self, session: ServedSession, ws: ServerConnection,
                        event: dict[str, Any]) -> bool:
        """Act on one client event; True when the session is over."""
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            await session.append(event)
        elif kind in ("input_audio_buffer.commit", "input.commit"):
            await session.commit()
        elif kind in ("barge_in", "response.cancel", "output_audio_buffer.clear") or (
                kind == "turn.signal" and event.get("event") == "barge_in"):
            await session.barge_in()
        elif kind == "playback.ack":
            await session.playback_ack(event)
        elif kind == "session.event_ack":
            seq = event.get("server_event_seq")
            if isinstance(seq, int):
                session.acknowledge(seq)
        elif kind == "session.heartbeat":
            await session.emit({"type": "session.heartbeat_ack", "session_id": session.id})
        elif kind == "session.update":
            config = event.get("session") if isinstance(event.get("session"), dict) else {}
            await session.emit({"type": "session.updated", "session": session.describe(config)})
        elif kind == "input_audio_buffer.clear":
            await session.emit({"type": "input_audio_buffer.cleared"})
        elif kind in ("session.close", "close", "close_session", "session_close"):
            await session.emit({"type": "session.closed", "session_id": session.id,
                                "reason": "session_close"})
            await session.end("session_close")
            await ws.close()
            return True
        else:
            await session.emit(wire.error("unsupported_event",
                                          f"{kind} is not supported by duetto serve"))
        return False
