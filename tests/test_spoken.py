"""The words heard: each chunk's text when it starts to play, never a chunk that a flush
skipped or that is still queued (what subtitles show)."""

from __future__ import annotations

import numpy as np
from test_player import BLOCK, chunk, make_player, pull

from app.flow.spoken import SpokenText


def test_text_is_told_as_its_speech_starts_and_never_for_skipped_speech():
    player = make_player()
    spoken = SpokenText(player)
    player.write(chunk(np.ones(BLOCK * 2), seq=0, text="Hello "))
    player.write(chunk(np.ones(BLOCK * 2), seq=1, text="there, "))
    player.write(chunk(np.ones(BLOCK * 2), seq=2, text="friend."))
    player.write(chunk(np.ones(BLOCK * 2), seq=3, text=" Never heard."))
    assert spoken.poll() == []  # written, not played: not said yet
    pull(player, 1)
    assert spoken.poll() == [(1, "Hello ")]
    pull(player, 2)  # the second chunk starts
    assert spoken.poll() == [(1, "there, ")]
    assert spoken.poll() == []  # told once
    player.flush()  # a barge-in: the rest is dropped unheard
    pull(player, 6)
    assert spoken.poll() == []
    player.write(chunk(np.ones(BLOCK), response_id=2, seq=0, text="Next."))
    pull(player, 1)
    assert spoken.poll() == [(2, "Next.")]


def test_a_paused_answer_is_not_told_until_it_plays():
    player = make_player()
    spoken = SpokenText(player)
    player.pause()  # an answer prepared during a silence waits
    player.write(chunk(np.ones(BLOCK), seq=0, text="Ready."))
    pull(player, 3)
    assert spoken.poll() == []
    player.resume()
    pull(player, 1)
    assert spoken.poll() == [(1, "Ready.")]
