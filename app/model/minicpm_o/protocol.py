"""MiniCPM-o 4.5's duplex token layout: the system prefix, one 1 s unit, the sliding window.

The conversation is one token stream in the LLM's KV cache (as OpenBMB's
`MiniCPMODuplex` lays it out):

    <|im_start|>system\\n{system text}\\n<|audio_start|> {reference voice} <|audio_end|><|im_end|>
    <unit> <image> {64 frame embeddings} </image> ... {10 audio embeddings}
        {the model's tokens: its decision, words, a chunk end} </unit>
    <unit> ...

The system prefix is protected: the sliding window drops whole units from its far end,
never the prefix. Every special id is read from the checkpoint's tokenizer (a token
missing there is an error naming it), never written here as a number.

This module only lays tokens out; duplex.py runs the model over them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from app.model.contract import BackendError

# The system text the official demo gives an omni (camera + microphone) session; the
# persona's role text follows it.
MODE_HEADER = "Streaming Omni Conversation."


@dataclass(frozen=True)
class SpecialIds:
    """The special tokens of the unit protocol, by their ids in this tokenizer."""

    im_start: int
    im_end: int
    unit: int
    unit_end: int
    image: int
    image_end: int
    slice: int
    slice_end: int
    audio_start: int
    audio_end: int
    tts_bos: int
    tts_eos: int
    listen: int
    speak: int
    turn_eos: int
    chunk_eos: int
    chunk_tts_eos: int
    tts_pad: int

    @property
    def chunk_terminators(self) -> frozenset[int]:
        """Tokens that end the model's turn within a unit (it is fed, then </unit>)."""
        return frozenset((self.listen, self.chunk_eos, self.chunk_tts_eos))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> SpecialIds:
        ids: dict[str, int] = {}
        missing = []
        for f in fields(cls):
            token = TOKENS[f.name]
            tid = tokenizer.convert_tokens_to_ids(token)
            unk = getattr(tokenizer, "unk_token_id", None)
            if tid is None or (unk is not None and tid == unk and token != tokenizer.unk_token):
                missing.append(token)
            else:
                ids[f.name] = int(tid)
        if missing:
            raise BackendError(
                f"the tokenizer lacks MiniCPM-o's special tokens {', '.join(missing)}",
                hint="this folder's tokenizer is not MiniCPM-o 4.5's: download it again",
            )
        return cls(**ids)


TOKENS: dict[str, str] = {
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "unit": "<unit>",
    "unit_end": "</unit>",
    "image": "<image>",
    "image_end": "</image>",
    "slice": "<slice>",
    "slice_end": "</slice>",
    "audio_start": "<|audio_start|>",
    "audio_end": "<|audio_end|>",
    "tts_bos": "<|tts_bos|>",
    "tts_eos": "<|tts_eos|>",
    "listen": "<|listen|>",
    "speak": "<|speak|>",
    "turn_eos": "<|turn_eos|>",
    "chunk_eos": "<|chunk_eos|>",
    "chunk_tts_eos": "<|chunk_tts_eos|>",
    "tts_pad": "<|tts_pad|>",
}


def bad_token_ids(tokenizer: Any) -> list[int]:
    """Ids the checkpoint's tokenizer_config.json marks never to be generated
    (`bad_token_ids`: stray bytes and fragments); empty when it has none."""
    found = getattr(tokenizer, "bad_token_ids", None)
    if found is None:
        found = getattr(tokenizer, "init_kwargs", {}).get("bad_token_ids", [])
    return [int(t) for t in found or ()]


# --- pieces of the stream ---------------------------------------------------------------

@dataclass(frozen=True)
class Tokens:
    """Token ids, fed through the LLM's embedding table."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class Embeds:
    """Embeddings made by an encoder (`kind`: "image", "audio" or "voice"), [n, hidden]."""

    kind: str
    tensor: torch.Tensor


Piece = Tokens | Embeds


def system_text(role_prompt: str) -> str:
    role = role_prompt.strip()
    return f"{MODE_HEADER} {role}" if role else MODE_HEADER


def system_prefix(ids: SpecialIds, tokenizer: Any, role_prompt: str,
                  voice: torch.Tensor | None = None) -> list[Piece]:
    """The protected prefix: role text, then the reference voice's audio embeddings.

    The text is encoded without the tokenizer adding anything; the special tokens around
    it are placed by id (so the layout does not depend on how a tokenizer splits
    special-token text).
    """
    text = tokenizer.encode(f"system\n{system_text(role_prompt)}\n", add_special_tokens=False)
    pieces: list[Piece] = [Tokens((ids.im_start, *text, ids.audio_start))]
    if voice is not None and voice.shape[0]:
        pieces.append(Embeds("voice", voice))
    pieces.append(Tokens((ids.audio_end, ids.im_end)))
    return pieces


def unit_prefill(ids: SpecialIds, frames: Sequence[torch.Tensor],
                 audio: torch.Tensor | None) -> list[Piece]:
    """One unit's input: <unit>, each frame's embeddings in <image>…</image>, the audio."""
    pieces: list[Piece] = [Tokens((ids.unit,))]
    for frame in frames:
        pieces += [Tokens((ids.image,)), Embeds("image", frame), Tokens((ids.image_end,))]
    if audio is not None and audio.shape[0]:
        pieces.append(Embeds("audio", audio))
    return pieces


def layout(pieces: Sequence[Piece]) -> list[int | tuple[str, int]]:
    """The pieces as a flat schema: token ids, and (kind, count) for embeddings."""
    out: list[int | tuple[str, int]] = []
    for piece in pieces:
        if isinstance(piece, Tokens):
            out.extend(piece.ids)
        else:
            out.append((piece.kind, int(piece.tensor.shape[0])))
    return out


def length(pieces: Sequence[Piece]) -> int:
    """Positions the pieces take in the KV cache."""
    return sum(len(p.ids) if isinstance(p, Tokens) else int(p.tensor.shape[0]) for p in pieces)


# --- the sliding window -----------------------------------------------------------------

@dataclass
class Window:
    """Which cache positions to drop so a long conversation fits, keeping the prefix.

    When the cache grows past `high` tokens after a unit, whole units are dropped from
    the oldest on until it holds `low` or fewer (the official "basic" window: 4,000 and
    3,500 by default). Pure bookkeeping: the caller cuts the KV cache.
    """

    high: int = 4000
    low: int = 3500

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"the window needs 0 < low <= high (got {self.low}, {self.high})")
        self.prefix = 0
        self.units: deque[int] = deque()

    def reset(self, prefix: int) -> None:
        self.prefix = prefix
        self.units.clear()

    @property
    def size(self) -> int:
        return self.prefix + sum(self.units)

    def add_unit(self, positions: int) -> int:
        """Record a finished unit; returns how many positions to drop right after the
        prefix (0: none). The dropped units are forgotten here."""
        if positions > 0:
            self.units.append(positions)
        if self.size <= self.high:
            return 0
        dropped = 0
        while self.size > self.low and self.units:
            dropped += self.units.popleft()
        return dropped
