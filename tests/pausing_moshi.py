"""The tiny Moshi with pauses: a native-duplex backend whose runs of speech are known.

The tiny model's random voice never falls silent (every frame decodes to noise at about
-20 dBFS and nearly every frame samples a word), so by itself it is one endless run of
speech. This subclass keeps every real step (Mimi encode, the model, the depth decoder,
Mimi decode, muting) and only makes the frames that `speaks(frame)` says are quiet come
out as a listening model's would: decoded audio silent, text PAD. The backend's own
rules then decide SPEAK / LISTEN / END_OF_TURN and number the responses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from app.model.contract import Control
from app.model.moshi.backend import MoshiBackend


class _QuietDecoder:
    """Mimi's streaming decoder, silenced on quiet frames (it still runs: same cost)."""

    def __init__(self, inner: Any, owner: PausingMoshi) -> None:
        self._inner = inner
        self._owner = owner

    def decode(self, codes):
        wave = self._inner.decode(codes)
        return wave * 0 if self._owner.quiet else wave

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _QuietVocab:
    """The text vocabulary, reading every token as PAD on quiet frames."""

    def __init__(self, inner: Any, owner: PausingMoshi) -> None:
        self._inner = inner
        self._owner = owner

    def piece_text(self, token_id: int) -> str:
        return "" if self._owner.quiet else self._inner.piece_text(token_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class PausingMoshi(MoshiBackend):
    """MoshiBackend whose frame `i` (from the conversation's start) is quiet unless
    `speaks(i)`; `muted` records, per frame, whether the backend muted it."""

    def __init__(self, speaks: Callable[[int], bool], **kwargs: Any) -> None:
        self.speaks = speaks
        self.quiet = False
        self.frame_index = 0
        self.muted: list[bool] = []
        super().__init__(**kwargs)

    def attach(self, loaded) -> None:
        super().attach(dataclasses.replace(loaded, vocab=_QuietVocab(loaded.vocab, self)))
        self._decoder = _QuietDecoder(self._decoder, self)

    def start(self, persona) -> None:
        super().start(persona)
        self.frame_index = 0
        self.muted.clear()

    def _muted(self, control: Control) -> bool:
        muted = super()._muted(control)
        self.muted.append(muted)
        return muted

    def _frame(self, loaded, chunk: np.ndarray, control: Control):
        self.quiet = not self.speaks(self.frame_index)
        self.frame_index += 1
        return super()._frame(loaded, chunk, control)
