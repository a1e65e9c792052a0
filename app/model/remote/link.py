"""One duplex session's connection: open, send, receive, resume after a drop.

Synchronous on purpose: the backend contract is called from the session's model worker,
and websockets' threaded client lets that thread send while a reader thread receives.
The reader puts every server event, once (events replayed after a resume are dropped by
their `server_event_seq`), on a queue, and acknowledges it so the server can forget it.
When the socket drops, the reader puts LOST on the queue; `resume()` opens a new socket
and re-attaches the same session from the last event received.

Every failure becomes a BackendError that says what happened and what to do.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from app.model.contract import BackendError
from app.model.remote import wire

LOST = "__lost__"  # the type of the reader's marker: its socket is gone
MAX_MESSAGE = 16 << 20


class SessionGone(BackendError):
    """The server no longer knows the session (it restarted, or the resume expired)."""


class Link:
    def __init__(self, address: str, model: str = "", token: str | None = None,
                 connect_timeout_s: float = 10.0) -> None:
        self.address = address
        self.url = wire.realtime_url(address, model)
        self.model = model
        self.token = token
        self.connect_timeout_s = connect_timeout_s
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.session_id = ""
        self.incarnation = 0
        self.resume_token = ""
        self.session: dict[str, Any] = {}
        self.last_seq = 0
        self.rtt_s: float | None = None  # the handshake's round trip
        self._ws: ClientConnection | None = None
        self._reader: threading.Thread | None = None
        self._closing = False

    @property
    def capabilities(self) -> dict[str, Any]:
        caps = self.session.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    # ---------------------------------------------------------------- opening
    def _connect(self, timeout_s: float) -> ClientConnection:
        try:
            return connect(self.url, additional_headers=wire.auth_headers(self.token),
                           open_timeout=timeout_s, max_size=MAX_MESSAGE, compression=None,
                           proxy=None, legacy=True)  # a connection, not a reconnect loop
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise BackendError(
                    f"the server at {self.address} refused the token (HTTP {status})",
                    hint="check the token in Settings → Model (the one the server was "
                         "started with)") from None
            body = exc.response.body.decode("utf-8", "replace").strip()
            raise BackendError(f"the server at {self.address} answered HTTP {status}: {body}",
                               hint="is this a duplex server (/v1/realtime?duplex=1)?") from None
        except InvalidURI as exc:
            raise BackendError(f"{self.address} is not a server address ({exc})",
                               hint="write it as HOST:PORT or ws://HOST:PORT") from None
        except TimeoutError:
            raise BackendError(
                f"the server at {self.address} did not answer within {timeout_s:g} s",
                hint="is it running and reachable from here? a firewall may drop the "
                     "connection") from None
        except OSError as exc:
            raise BackendError(f"cannot reach the server at {self.address} ({exc})",
                               hint="is `duetto serve` or vLLM-Omni running there, on "
                                    "that port?") from None

    def _handshake(self, ws: ClientConnection, first: dict[str, Any], wanted: str,
                   timeout_s: float) -> dict[str, Any]:
        started = time.monotonic()
        deadline = started + timeout_s
        ws.send(wire.encode(first))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ws.close()
                raise BackendError(
                    f"the server at {self.address} accepted the connection but did not "
                    f"open the session within {timeout_s:g} s",
                    hint="the server may be overloaded or stuck; restart it and try again")
            try:
                event = wire.decode(ws.recv(timeout=remaining))
            except TimeoutError:
                continue
            except ConnectionClosed:
                raise BackendError(f"the server at {self.address} closed the connection "
                                   "while the session was opening",
                                   hint="see the server's log") from None
            if event is None:
                continue
            if event["type"] == wanted:
                self.rtt_s = time.monotonic() - started
                return event
            if event["type"] == "error":
                code, message = wire.error_text(event)
                ws.close()
                error = SessionGone if code in wire.FATAL_RESUME_CODES else BackendError
                raise error(f"the server refused the session: {message}",
                            hint=f"server code {code}" if code else "")
            if event["type"] == "session.resync_required":
                ws.close()
                raise SessionGone("the server lost the events this session missed")

    def open(self, config: dict[str, Any]) -> dict[str, Any]:
        """Open a new session with `config` (the session.update body); its description."""
        ws = self._connect(self.connect_timeout_s)
        created = self._handshake(ws, {"type": "session.update", "session": config},
                                  "session.created", self.connect_timeout_s)
        self.session = created.get("session") or {}
        self.session_id = str(self.session.get("id") or created.get("session_id") or "")
        self.incarnation = int(created.get("incarnation") or 0)
        self.resume_token = str(created.get("resume_token") or "")
        self._note_seq(created)
        self._start_reader(ws)
        return self.session

    def resume(self, timeout_s: float) -> None:
        """Re-attach this session on a new socket; SessionGone when the server forgot it."""
        if not self.resume_token or not self.capabilities.get("supports_session_resume"):
            raise SessionGone("the server cannot resume sessions")
        ws = self._connect(timeout_s)
        resumed = self._handshake(ws, {
            "type": "session.resume", "session_id": self.session_id,
            "incarnation": self.incarnation, "resume_token": self.resume_token,
            "last_received_server_event_seq": self.last_seq}, "session.resumed", timeout_s)
        self.resume_token = str(resumed.get("resume_token") or self.resume_token)
        self._start_reader(ws)

    def _start_reader(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._reader = threading.Thread(target=self._read, args=(ws,), daemon=True,
                                        name="duplex-link-reader")
        self._reader.start()

    def _note_seq(self, event: dict[str, Any]) -> bool:
        """Remember the cursor; False for an event already received (a replay)."""
        seq = event.get("server_event_seq")
        if not isinstance(seq, int):
            return True
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def _read(self, ws: ClientConnection) -> None:
        try:
            for raw in ws:
                event = wire.decode(raw)
                if event is None or not self._note_seq(event):
                    continue
                self.events.put(event)
                if isinstance(event.get("server_event_seq"), int):
                    ws.send(wire.encode({"type": "session.event_ack",
                                         "server_event_seq": event["server_event_seq"]}))
        except (ConnectionClosed, OSError):
            pass
        if not self._closing:
            self.events.put({"type": LOST, "socket": id(ws)})

    def is_current_loss(self, event: dict[str, Any]) -> bool:
        """A loss marker from the socket in use (one from a replaced socket is stale)."""
        return self._ws is not None and event.get("socket") == id(self._ws)

    # ---------------------------------------------------------------- use
    def send(self, event: dict[str, Any]) -> bool:
        """Send one event; False when the socket is gone (resume, then send again)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            ws.send(wire.encode(event))
            return True
        except (ConnectionClosed, OSError):
            return False

    def next_event(self, timeout_s: float) -> dict[str, Any] | None:
        try:
            return self.events.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def drop(self) -> None:
        """Let go of the socket without ending the session (the server keeps it for a
        resume): for a server that stopped answering on a connection that looks open."""
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close_socket()

    def close(self) -> None:
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.send(wire.encode({"type": "session.close"}))
        with contextlib.suppress(Exception):  # closing a broken socket: nothing left to do
            ws.close()
