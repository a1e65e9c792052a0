"""A turn-based answer starts as soon as the chunks after its first will come in time, by
what the answers before it showed (answer_pace.py), and the player honours it."""

from __future__ import annotations

import numpy as np
import pytest

from app.flow.answer_pace import AnswerPace
from app.flow.player import Player
from app.flow.virtual_output import StreamTime
from app.model.contract import BackendSpec, SpeechChunk

RATE = 24000
BLOCK = 240  # 10 ms


def test_an_answers_lead_is_how_late_its_chunks_came_against_playing_from_the_first():
    pace = AnswerPace()
    assert pace.lead() is None  # nothing measured: the sample cushion decides
    pace.chunk(10.0, 0.12)
    pace.chunk(10.28, 0.48)  # due at 10.12: 0.16 s late
    pace.chunk(10.50, 0.48)  # due at 10.60: early
    pace.close()
    assert pace.leads == [pytest.approx(0.16)]
    assert pace.lead() == pytest.approx(0.16)
    pace.close()  # idempotent: no answer open
    assert len(pace.leads) == 1


def test_the_wait_is_the_longest_recent_lead_and_a_stall_is_capped_and_forgotten():
    pace = AnswerPace(keep=3, most=1.5)
    for late in (0.05, 5.0, 0.02, 0.01):
        pace.chunk(0.0, 0.1)
        pace.chunk(0.1 + late, 0.1)
        pace.close()
    assert pace.leads == [pytest.approx(1.5), pytest.approx(0.02), pytest.approx(0.01)]
    pace.chunk(0.0, 0.1)
    pace.chunk(0.13, 0.1)
    pace.close()
    assert pace.lead() == pytest.approx(0.03)  # the stall has gone out of the window


def _play_answers(answers: list[list[tuple[float, float]]], *, margin: float = 0.03,
                  keep: int = 6, cushion: float = 0.15) -> tuple[Player, list[float]]:
    """Answers written through a player whose device pulls 10 ms blocks on the writer's
    clock. Each answer is (arrival after the answer's first chunk, seconds) per chunk,
    the first at 0; answers start 3 s apart. Returns the player and, per answer, how long
    after its first chunk its first sample played."""
    now = [0.0]
    player = Player(RATE, prebuffer_seconds=cushion, start_margin_seconds=margin,
                    clock=lambda: now[0])
    player.suit(BackendSpec("test", 1000, 16000, 24000, 1, False), AnswerPace(keep=keep))
    writes = sorted((3.0 * (i + 1) + at, i, k, seconds)
                    for i, answer in enumerate(answers) for k, (at, seconds) in enumerate(answer))
    ends = {i: 3.0 * (i + 1) + answer[-1][0] for i, answer in enumerate(answers)}
    started: dict[int, float] = {}
    t = 0.0
    while t < 3.0 * (len(answers) + 1):
        now[0] = t
        while writes and writes[0][0] <= t + 1e-9:
            _, i, k, seconds = writes.pop(0)
            player.write(SpeechChunk(np.full(round(seconds * RATE), 0.5, np.float32), RATE,
                                     i + 1, k, ""))
            if t >= ends[i] - 1e-9:
                player.end_response(i + 1)
        buf = np.zeros((BLOCK, 1), np.float32)
        player.callback(buf, BLOCK, StreamTime(currentTime=t, outputBufferDacTime=t), None)
        if buf[0, 0] == 0.5:
            answer = int(t // 3.0) - 1
            started.setdefault(answer, t - 3.0 * (answer + 1))
        t = round(t + BLOCK / RATE, 6)
    return player, [started[i] for i in range(len(answers))]


# The tiny Qwen's opening on a 2-core CPU before the chunks grew: a 0.12 s first chunk,
# the second 0.28 s later.
SLOW_SECOND = [(0.0, 0.12), (0.28, 0.48), (0.56, 0.48), (0.84, 0.48)]
# Chunks that keep ahead of playback from the first.
ON_TIME = [(0.0, 0.12), (0.09, 0.12), (0.18, 0.24), (0.36, 0.48), (0.7, 0.48)]


def test_an_answer_starts_once_its_chunks_can_keep_up_as_the_ones_before_showed():
    player, started = _play_answers([SLOW_SECOND, SLOW_SECOND, SLOW_SECOND])
    assert player.underruns == 0
    # The first waits for the 150 ms sample cushion (the second chunk, 0.28 s); the
    # next ones for the lead the first showed (0.16 s) and the margin.
    assert started[0] == pytest.approx(0.28, abs=0.011)
    assert started[1] == pytest.approx(0.19, abs=0.011)
    assert started[2] == pytest.approx(0.19, abs=0.011)


def test_chunks_that_keep_ahead_start_an_answer_within_the_margin_of_its_first():
    player, started = _play_answers([ON_TIME, ON_TIME])
    assert player.underruns == 0
    assert started[0] == pytest.approx(0.09, abs=0.011)  # the sample cushion: 2 chunks
    assert started[1] <= 0.03 + 0.011  # before the cushion's 150 ms would have filled


def test_starting_on_the_first_chunk_without_the_learned_lead_runs_dry():
    """What the lead is for: with nothing learnt (no answers kept) and no sample cushion,
    the slow second chunk leaves a gap."""
    player, _ = _play_answers([SLOW_SECOND], keep=0, cushion=0.0)
    assert player.underruns == 1


def test_a_backends_pace_carries_over_to_its_next_conversation():
    """How late a backend's chunks come is the backend's and the machine's: a new player
    for the same backend starts its first answer by what the last one learnt."""
    from app.flow.answer_pace import pace_of

    class Backend:  # any object: the pace is keyed by identity
        pass

    one, other = Backend(), Backend()
    assert pace_of(one) is pace_of(one) and pace_of(one) is not pace_of(other)
    spec = BackendSpec("test", 1000, 16000, 24000, 1, False)
    first = Player(RATE, start_margin_seconds=0.03)
    first.suit(spec, pace_of(one))
    first.write(SpeechChunk(np.zeros(2400, np.float32), RATE, 1, 0, ""))
    first.end_response(1)
    assert pace_of(one).lead() == 0.0
    assert pace_of(other).lead() is None
