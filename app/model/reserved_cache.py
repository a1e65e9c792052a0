"""A key/value cache whose memory is claimed once, when the conversation starts.

Why not transformers' DynamicCache: it grows every layer by `torch.cat` on every
forward pass, so a conversation that fills its context re-allocates (and copies) the
whole cache unit after unit, and the process grows for minutes until the token budget
is reached: on a CPU the freed copies also fragment the heap; on a GPU a context that
does not fit fails at minute five instead of at the start. Why not StaticCache: its
attention always spans the whole reservation (masked), so every step of a young
conversation would pay for a full one.

`ReservedLayer` sits in between. It allocates a buffer of `capacity` tokens per layer
up front and writes each forward pass's keys and values into it in place; attention
sees a view of the filled prefix only, so compute is exactly that of a dynamic cache.
Cropping (a rollback after a retracted answer, a trimmed context) moves the fill mark
and frees nothing, and the next tokens overwrite what was dropped.

Should a conversation outrun the reservation (the budget is a target, not a hard wall:
an answer's close-of-turn tokens can go a few past it), the layer grows by a quarter
and says so in the log rather than fail mid-sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

log = logging.getLogger(__name__)

GROWTH = 1.25  # when a reservation overflows after all: grow by a quarter


@dataclass(frozen=True)
class Move:
    """`count` tokens from `src` to `dst`, `shift` rotary positions down."""

    src: int
    dst: int
    count: int
    shift: int = 0


class ReservedLayer(DynamicLayer):
    """One decoder layer's keys and values in a buffer reserved for `capacity` tokens."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError("capacity must be at least one token")
        self.capacity = capacity
        self.length = 0
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        # Sized from the first states this layer sees, so every buffer has its layer's own
        # device (accelerate may spread layers over devices) and the attention's dtype.
        self.device = key_states.device
        self._key_buffer = self._buffer_like(key_states, self.capacity)
        self._value_buffer = self._buffer_like(value_states, self.capacity)
        self.length = 0
        self._expose()
        self.is_initialized = True

    @staticmethod
    def _buffer_like(states: torch.Tensor, capacity: int) -> torch.Tensor:
        batch, heads, _, head_dim = states.shape
        # Zeros, not empty: the system commits a page only when it is first written, so
        # an empty buffer would still grow the process as the context fills.
        return torch.zeros((batch, heads, capacity, head_dim), dtype=states.dtype,
                           device=states.device)

    def _expose(self) -> None:
        # Views of the filled prefix: what attention (and DynamicLayer's own helpers) read.
        self.keys = self._key_buffer[:, :, : self.length]
        self.values = self._value_buffer[:, :, : self.length]

    def _grow(self, needed: int) -> None:
        new_capacity = max(needed, int(self.capacity * GROWTH))
        log.warning("the context outgrew its reserved %d tokens; growing it to %d",
                    self.capacity, new_capacity)
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            new = self._buffer_like(old, new_capacity)
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)
        self.capacity = new_capacity

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.capacity:
            self._grow(end)
        self._key_buffer[:, :, start:end] = key_states
        self._value_buffer[:, :, start:end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def compact(self, moves: list[Move], new_length: int,
                rotate: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> None:
        """Move kept token ranges down over dropped ones, in place, and end at
        `new_length`. `rotate(keys, shift)` re-positions a range's keys, as rotary
        embeddings need when tokens move `shift` positions down (values carry no
        position). Moves must be in order of their source, each landing at or before it.
        """
        if not self.is_initialized:
            return
        for move in moves:
            if move.dst > move.src:
                raise ValueError("a compaction moves tokens down, never up")
            src = slice(move.src, move.src + move.count)
            dst = slice(move.dst, move.dst + move.count)
            # Source and destination may overlap: read each range out before writing it.
            keys = self._key_buffer[:, :, src]
            keys = rotate(keys, move.shift) if rotate is not None and move.shift else keys.clone()
            self._key_buffer[:, :, dst] = keys
            self._value_buffer[:, :, dst] = self._value_buffer[:, :, src].clone()
        self.length = new_length
        self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        # transformers 5's convention: a negative count of tokens to drop from the end.
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self.length = max(0, self.length + tokens_to_remove)
        self._expose()

    def reset(self) -> None:
        # Keep the reservation: a reset conversation fills the same buffers again.
        self.length = 0
        if self.is_initialized:
            self._expose()

    @property
    def reserved_bytes(self) -> int:
        if not self.is_initialized:
            return 0
        return sum(b.numel() * b.element_size() for b in (self._key_buffer, self._value_buffer))

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a reserved cache holds one conversation")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("a reserved cache holds one conversation")


def reserved_cache(layers: int, capacity: int) -> Cache:
    """A cache of `layers` decoder layers, each reserving `capacity` tokens.

    A layer allocates its buffers on its first forward pass: for a conversation that is
    the system prompt, prefilled when the conversation starts, so the memory a full
    context needs is taken then; it fits then or fails then (`torch.OutOfMemoryError`,
    which the backend turns into a clear message).
    """
    return Cache(layers=[ReservedLayer(capacity) for _ in range(layers)])


def reserved_bytes(cache: Cache) -> int:
    """Bytes held by a cache's reservations (0 for layers of other kinds)."""
    return sum(getattr(layer, "reserved_bytes", 0) for layer in cache.layers)
