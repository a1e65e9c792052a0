"""Which of the assistant's words have been heard: the text of each speech chunk, told
when that chunk starts to play.

A model writes its text well ahead of its speech (on a slow machine, tens of seconds
ahead), and part of what it writes is never spoken at all: an answer cut by a barge-in,
retracted, or whose voice ended first. Subtitles made from the text as it is produced
showed all of that; subtitles made from this show what the user hears, when they hear it.
"""

from __future__ import annotations

from app.flow.player import Player


class SpokenText:
    """Polled by the session's listener (one thread); `poll()` returns what started to
    play since the last call, as (response id, text) pairs."""

    def __init__(self, player: Player) -> None:
        self.player = player
        self._cursor = 0

    def poll(self) -> list[tuple[int, str]]:
        started, self._cursor = self.player.started_since(self._cursor)
        return [(s.response_id, s.text_span) for s in started if s.text_span]
