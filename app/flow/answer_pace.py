"""When a turn-based answer may start playing: once the chunks after its first will, by
what this machine has shown, each arrive before the audio ahead of them has played.

A turn-based backend writes an answer as a series of chunks, made as fast as it can.
Played from the moment its first chunk arrived, chunk k (arriving at a_k, with A_k
seconds of the answer before it) is on time if a_k - a_1 <= A_k. The most any chunk of
an answer missed that by is how long that answer had to wait after its first chunk to
play without a gap: its lead. Leads depend on the backend and on this machine, not on
the text, so the next answer waits as long as the longest lead of the last few answers (the player
adds a margin for the scatter of threads and devices). They are kept per backend across
its conversations (`pace_of`): the first answer of a conversation is paced by the ones
before it, as the answers after it are.

A fixed cushion in samples (150 ms) did not say whether the rest would come in time:
after a 0.12 s first chunk the tiny Qwen's second came 0.28 s later on a 2-core CPU, so
every answer waited for it, and on a machine slower still the cushion was too short. With
no answer measured yet, the player falls back to that cushion.

Leads are capped: a backend that stalled once (5 s in the fault campaign) should not make
every later answer wait 5 s; the underrun it caused is counted, and the next answers
start later by the cap at most.
"""

from __future__ import annotations

import weakref
from collections import deque


class AnswerPace:
    """Arrival times of the open answer's chunks and the leads of recent answers. Used by
    the player's writers, under their lock."""

    def __init__(self, *, keep: int = 6, most: float = 1.5) -> None:
        self.most = most
        self._leads: deque[float] = deque(maxlen=keep)
        self._first: float | None = None  # when the open answer's first chunk arrived
        self._ahead = 0.0  # seconds of the open answer written so far
        self._lead = 0.0  # the open answer's lead so far

    @property
    def leads(self) -> list[float]:
        """The leads of the last answers, oldest first."""
        return list(self._leads)

    def chunk(self, arrival: float, seconds: float) -> None:
        """A chunk of the open answer (its first opens one) arrived, `seconds` long."""
        if self._first is None:
            self._first = arrival
        else:
            self._lead = max(self._lead, arrival - self._first - self._ahead)
        self._ahead += seconds

    def close(self) -> None:
        """The open answer ended, or was cut: what it showed counts. Idempotent."""
        if self._first is not None:
            self._leads.append(min(self._lead, self.most))
        self._first = None
        self._ahead = 0.0
        self._lead = 0.0

    def lead(self) -> float | None:
        """Seconds an answer starting now must wait after its first chunk arrived, by the
        recent answers; None while no answer has been measured."""
        return max(self._leads) if self._leads else None


_PACES: weakref.WeakKeyDictionary[object, AnswerPace] = weakref.WeakKeyDictionary()


def pace_of(backend: object) -> AnswerPace:
    """The pace of this backend's answers, kept while the backend lives: how late its
    chunks come is the backend's and the machine's, not one conversation's. (One
    conversation at a time uses it, as one player's writers do, under that player's lock.)"""
    pace = _PACES.get(backend)
    if pace is None:
        pace = _PACES[backend] = AnswerPace()
    return pace
