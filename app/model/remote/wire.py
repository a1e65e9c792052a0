"""The duplex wire contract: `/v1/realtime?duplex=1`, as vLLM-Omni defines it.

Both ends of Duetto's network path speak it: the remote backend (client.py, link.py) as
a client of a vLLM-Omni server or of `duetto serve`, and `duetto serve` (app/serve/) as a
server any client of that contract can use. This module holds what both ends agree on,
and nothing that knows about models or the flow.

The contract, in our words (what this code relies on)
-----------------------------------------------------
One WebSocket at `ws://HOST:PORT/v1/realtime?duplex=1` (query `model=` optional,
`autostart=0`: the client opens the session itself). Every message is one JSON object
in a text frame with a `type`. Every server message carries `server_event_seq`, an
increasing number that is the cursor for resuming.

Client to server:

* `session.update {session: {...}}` — the first one opens the session: `model`,
  `instructions` (the role prompt), `voice`, `input_audio_format` "pcm16" at
  `sample_rate_hz` 16000, output "pcm16" at `audio.output.sample_rate_hz` 24000,
  `turn_detection` null (the model decides), `playback_commit_policy`, `extra_body`.
  Later ones change the session (answered with `session.updated`).
* `input_audio_buffer.append {audio, sample_rate_hz, duration_ms, audio_end_ms,
  video_frames?}` — base64 PCM16 little-endian mono; `audio_end_ms` is the total sent
  so far (the server drops an append it has already taken, after a resume);
  `video_frames` are bare base64 JPEGs riding the append that closes a model unit.
* `input_audio_buffer.commit` — the user's turn ended (turn-based models answer then).
* `barge_in` — stop the answer in progress now (capability `supports_barge_in`);
  `response.cancel` does the same for the named or active response.
* `playback.ack {response_id, played_ms, committed_ms, truncate?}` — how much of an
  answer was actually played; `truncate: true` after an interruption (the rest was
  never heard and must not stay in the model's memory of what it said).
* `session.event_ack {server_event_seq}`, `session.heartbeat`, `session.close`.
* `session.resume {session_id, incarnation, resume_token,
  last_received_server_event_seq}` — first message on a new socket after a drop.

Server to client:

* `session.created` (top level `resume_token`, `incarnation`; `session.id`,
  `session.capabilities`: `implementation_level` ("model_native_duplex": the model
  says listen/speak per unit; anything else: it answers when the turn is committed),
  `chunk_period_ms` (the model unit), `supports_barge_in`, `supports_session_resume`),
  `session.updated`, `session.resumed` (rotated `resume_token`, then the events after
  the client's cursor again), `session.closed`, `session.expired`,
  `session.heartbeat_ack`.
* `response.created {response_id}`, `response.speak`, `response.output_audio.delta
  {response_id, delta: base64 PCM16, sample_rate_hz, metadata: {model_speak,
  end_of_turn, audio_duration_ms}}` (vLLM-Omni's older spelling
  `response.audio.delta` is read too), `response.output_audio_transcript.delta
  {delta}` one per audio delta, `response.output_audio.done`, `response.done
  {response: {status: completed | cancelled, status_details: {reason}}}`.
* `response.listen` — the model keeps listening this unit (no `response_id`), or
  ends a response that never spoke (with one).
* `output_audio_buffer.cleared`, `playback.acknowledged`, `error {error: {code,
  message}}` (flat `{error: "...", code}` before the session exists).

Our additions (additive, ignored by other clients): each native unit's last
decision-bearing event (a `response.listen` or an audio delta) carries
`metadata.unit_done`, the index of the server-side unit it closes, so our client
knows when a unit is answered; without it (a vLLM-Omni server) the first such event
answers the unit. The token rides `Authorization: Bearer TOKEN`, as vLLM's `--api-key`
does; a refused token is an HTTP 401 before the upgrade.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

PATH = "/v1/realtime"
INPUT_RATE = 16000  # PCM16 up
OUTPUT_RATE = 24000  # PCM16 down
NATIVE = "model_native_duplex"
TURN_BASED = "turn_based"  # ours: answers when the turn is committed

# Resume failures after which only a new session helps (vLLM-Omni's codes).
FATAL_RESUME_CODES = frozenset({
    "invalid_session_resume", "session_resume_expired", "unsupported_session_resume",
    "invalid_resume_token", "session_resume_conflict",
})
AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
TRANSCRIPT_DELTAS = frozenset({
    "response.output_audio_transcript.delta", "response.audio_transcript.delta",
    "response.output_text.delta", "response.text.delta",
})


def pcm16_bytes(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> PCM16 little-endian (clipped)."""
    clipped = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def pcm16_samples(data: bytes) -> np.ndarray:
    """PCM16 little-endian -> float32 in [-1, 1)."""
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    if text.startswith("data:"):  # a data URL: the wire carries bare base64
        text = text.partition(";base64,")[2]
    return base64.b64decode(text)


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def decode(raw: str | bytes) -> dict[str, Any] | None:
    """One message, or None for anything that is not a JSON object with a type."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("type"), str) else None


def realtime_url(address: str, model: str = "") -> str:
    """The duplex URL for an address: "host:port", "ws://host:port", "http://..." all do."""
    if "://" not in address:
        address = f"ws://{address}"
    parts = urlsplit(address)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a server address: {address!r} (expected ws://HOST:PORT)")
    path = parts.path if parts.path not in ("", "/") else PATH
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.setdefault("duplex", "1")
    query["autostart"] = "0"
    if model:
        query.setdefault("model", model)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def token_matches(header: str | None, token: str) -> bool:
    """An `Authorization` header against the expected token, in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return secrets.compare_digest(given.strip().encode(), token.encode())


def is_loopback(host: str) -> bool:
    """True when only this machine can reach `host` (a name must be "localhost")."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def error(code: str, message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "code": code, "message": message}}


def error_text(event: dict[str, Any]) -> tuple[str, str]:
    """(code, message) of an error event, in either of its two shapes."""
    err = event.get("error")
    if isinstance(err, dict):
        return str(err.get("code") or ""), str(err.get("message") or err)
    return str(event.get("code") or ""), str(err or event)
