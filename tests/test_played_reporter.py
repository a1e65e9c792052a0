"""The session tells a backend that follows playback what reached the speaker, as it
plays (app/flow/played.py): the player's own count, not what was written to it."""

from __future__ import annotations

import numpy as np
from test_player import BLOCK, RATE, chunk, make_player, pull

from app.flow.played import PlayedReporter


class Follower:
    """A backend's played() (the only method the reporter uses), recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def played(self, response_id: int, seconds: float) -> None:
        self.calls.append((response_id, seconds))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_what_played_is_reported_as_it_plays_and_an_answer_is_followed_to_its_end():
    player, sink, clock = make_player(), Follower(), Clock()
    reporter = PlayedReporter(sink, player, interval_s=0.2, clock=clock)
    player.write(chunk(np.ones(RATE), response_id=1))  # one second written at once
    reporter.follow(1)
    reporter.poll()
    assert sink.calls == []  # nothing played yet
    for step in range(1, 6):  # 0.2 s of playback between polls
        pull(player, 20, t0=step)
        clock.now += 0.2
        reporter.poll()
    seconds = [s for _, s in sink.calls]
    assert seconds == [round(0.2 * k * RATE / BLOCK) * BLOCK / RATE for k in range(1, 6)]
    reporter.generated(1)
    pull(player, 5)
    clock.now += 0.2
    reporter.poll()  # played out: its last position, then no more
    assert sink.calls[-1] == (1, 1.0)
    calls = len(sink.calls)
    clock.now += 0.2
    reporter.poll()
    assert len(sink.calls) == calls


def test_polls_are_limited_to_the_interval_and_silent_when_nothing_moved():
    player, sink, clock = make_player(), Follower(), Clock()
    reporter = PlayedReporter(sink, player, interval_s=0.2, clock=clock)
    player.write(chunk(np.ones(RATE), response_id=3))
    reporter.follow(3)
    pull(player, 5)
    reporter.poll()
    pull(player, 5)
    clock.now += 0.1
    reporter.poll()  # too soon
    assert sink.calls == [(3, 5 * BLOCK / RATE)]
    clock.now += 0.1
    reporter.poll()
    clock.now += 0.2
    reporter.poll()  # nothing played since
    assert sink.calls == [(3, 5 * BLOCK / RATE), (3, 10 * BLOCK / RATE)]


def test_a_flushed_answer_reports_where_it_was_cut_and_then_nothing():
    player, sink, clock = make_player(), Follower(), Clock()
    reporter = PlayedReporter(sink, player, interval_s=0.2, clock=clock)
    player.write(chunk(np.ones(RATE), response_id=1))
    reporter.follow(1)
    pull(player, 30)
    player.flush()
    pull(player, 30)
    reporter.forget(1)  # the session does this when it tells the backend heard()
    assert sink.calls == [(1, 30 * BLOCK / RATE)]
    clock.now += 1.0
    reporter.poll()
    assert len(sink.calls) == 1


def test_a_backend_without_played_costs_nothing():
    player = make_player()
    reporter = PlayedReporter(object(), player)
    assert not reporter.active
    reporter.follow(1)
    reporter.poll(force=True)  # no error, nothing to call


def test_a_live_streams_listening_after_an_answer_is_not_part_of_it():
    """A native model's quiet chunks after a run keep the run's id (native.py): what
    plays after the answer ended is not reported as the answer."""
    player, sink, clock = make_player(live=True), Follower(), Clock()
    reporter = PlayedReporter(sink, player, interval_s=0.2, clock=clock)
    player.write(chunk(np.ones(RATE // 2), response_id=1))  # the answer: 0.5 s
    reporter.follow(1)
    reporter.generated(1)  # its END_OF_TURN
    player.write(chunk(np.zeros(RATE), response_id=1, seq=1))  # listening, same id
    pull(player, 100)  # a whole second plays
    clock.now += 0.2
    reporter.poll()
    assert sink.calls == [(1, 0.5)]
    clock.now += 0.2
    reporter.poll()
    assert sink.calls == [(1, 0.5)]
