"""How much of each answer reached the speaker, told to a backend that follows playback.

A model on a server keeps, as its memory of what it said, what the client says was
played (vLLM-Omni's `playback.ack`). Only the player knows that: this reporter asks it,
at most every `interval_s`, for each answer still playing, and passes the cumulative
seconds to the backend's optional `played()` (app/model/contract.py, FollowsPlayback).
A backend without it costs nothing. An answer cut by a barge-in is left to `heard()`,
which says where it was cut; one that finished generating is followed until all it
wrote has played (or was flushed away).

The worker says which answers it writes (`follow`, `generated`, `forget`); the listener
polls (`poll`), since the worker can sit inside a step() for as long as an answer takes
to stream. One lock between them; the backend's played() returns at once (contract).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from app.flow.player import Player
from app.model.contract import FollowsPlayback

MAX_FOLLOWED = 8  # answers followed at once; older ones have long finished playing


class PlayedReporter:
    def __init__(self, backend: object, player: Player, *, interval_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = backend if isinstance(backend, FollowsPlayback) else None
        self.player = player
        self.interval_s = interval_s
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()
        self._followed: dict[int, int] = {}  # response id -> samples last reported
        # Response id -> ring position where it ended (generated; its id may go on, on
        # a live stream's listening chunks, which are not part of it).
        self._ends: dict[int, int] = {}

    @property
    def active(self) -> bool:
        return self._sink is not None

    def follow(self, response_id: int) -> None:
        """An answer started to be written to the player."""
        if self._sink is None:
            return
        with self._lock:
            if response_id in self._followed:
                return
            self._followed[response_id] = 0
            while len(self._followed) > MAX_FOLLOWED:
                self._forget(next(iter(self._followed)))

    def generated(self, response_id: int) -> None:
        """The model finished (or stopped) this answer: nothing more will be written."""
        with self._lock:
            if response_id in self._followed:
                self._ends[response_id] = self.player.written_position

    def forget(self, response_id: int) -> None:
        """Cut by a barge-in: its last position goes now, then `heard()` says it was cut."""
        with self._lock:
            self._forget(response_id)

    def _forget(self, response_id: int) -> None:
        reported = self._followed.pop(response_id, None)
        end = self._ends.pop(response_id, None)
        if self._sink is not None and reported is not None:
            samples = self.player.heard(response_id, end).samples
            if samples > reported:
                self._sink.played(response_id, samples / self.player.output_rate)

    def poll(self, force: bool = False) -> None:
        if self._sink is None or not self._followed:
            return
        now = self._clock()
        if not force and now < self._next:
            return
        self._next = now + self.interval_s
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        assert self._sink is not None
        rate = self.player.output_rate
        for rid, reported in list(self._followed.items()):
            end = self._ends.get(rid)
            heard = self.player.heard(rid, end)
            if heard.samples > reported:
                self._followed[rid] = heard.samples
                self._sink.played(rid, heard.samples / rate)
            # The speaker is past its end: played out, or flushed (heard() of it never
            # moves again).
            if end is not None and self.player.played_position >= end:
                del self._followed[rid]
                del self._ends[rid]
