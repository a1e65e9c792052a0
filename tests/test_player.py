"""The player: ordered playback, instant flush, honest underrun counts, what was heard."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pytest

from app.flow.player import Player
from app.flow.virtual_output import StreamTime, VirtualOutputStream
from app.model.contract import SpeechChunk

RATE = 24000
BLOCK = 240  # 10 ms


def make_player(rate: int = RATE, **kwargs) -> Player:
    """A player that starts at once (no jitter cushion, no margin on an answer's paced
    start) unless a test asks for one."""
    kwargs.setdefault("prebuffer_seconds", 0.0)
    kwargs.setdefault("start_margin_seconds", 0.0)
    return Player(rate, **kwargs)


def chunk(values: np.ndarray, response_id: int = 1, seq: int = 0, text: str = "") -> SpeechChunk:
    return SpeechChunk(values.astype(np.float32), RATE, response_id, seq, text)


def pull(player: Player, blocks: int, channels: int = 1, t0: float = 0.0) -> np.ndarray:
    """Drive the callback by hand like a device would, `blocks` times."""
    out = []
    for i in range(blocks):
        buf = np.full((BLOCK, channels), 9.0, dtype=np.float32)  # garbage must be overwritten
        t = t0 + i * BLOCK / RATE
        player.callback(buf, BLOCK, StreamTime(currentTime=t, outputBufferDacTime=t + 0.01), None)
        out.append(buf.copy())
    return np.concatenate(out)


def test_chunks_play_in_order_sample_for_sample_on_every_channel():
    player = make_player(RATE)
    a = np.linspace(-0.5, 0.5, 1000)
    b = np.linspace(0.3, -0.3, 700)
    player.write(chunk(a, seq=0))
    player.write(chunk(b, seq=1))
    out = pull(player, 10, channels=2)
    expected = np.concatenate([a, b]).astype(np.float32)
    np.testing.assert_array_equal(out[:1700, 0], expected)
    np.testing.assert_array_equal(out[:1700, 1], expected)
    assert np.all(out[1700:] == 0.0)


def test_flush_silences_the_next_block_and_rejects_the_rest_of_the_response():
    player = make_player(RATE)
    player.write(chunk(np.ones(RATE), seq=0))  # one second queued
    assert np.all(pull(player, 2) == 1.0)
    player.flush()
    assert np.all(pull(player, 1) == 0.0)
    # The backend had not stopped yet: its late chunk must not play.
    assert player.write(chunk(np.ones(500), seq=1)) is False
    assert np.all(pull(player, 3) == 0.0)
    # The next response plays normally.
    assert player.write(chunk(np.full(300, 0.25), response_id=2)) is True
    out = pull(player, 2)
    assert np.all(out[:300] == 0.25) and np.all(out[300:] == 0.0)
    assert player.stats().dropped_chunks == 1


def test_an_underrun_is_a_gap_inside_a_response_not_its_end():
    player = make_player(RATE)
    pull(player, 5)  # idle silence is not an underrun
    player.write(chunk(np.ones(BLOCK + 100)))
    pull(player, 3)  # ran dry: a stutter, or the end not reported yet?
    assert player.underruns == 0
    player.write(chunk(np.ones(BLOCK), seq=1))  # it went on: that was a gap of 380+240
    assert player.underruns == 1
    assert player.underrun_samples == (BLOCK - 100) + BLOCK
    pull(player, 2)  # runs dry again...
    player.end_response(1)  # ...but that was simply its end
    pull(player, 4)
    player.write(chunk(np.ones(BLOCK), response_id=2))
    assert player.underruns == 1


def test_heard_keeps_only_chunks_that_were_played_in_full():
    player = make_player(RATE)
    player.write(chunk(np.ones(BLOCK * 2), seq=0, text="Hello "))
    player.write(chunk(np.ones(BLOCK * 2), seq=1, text="there, "))
    player.write(chunk(np.ones(BLOCK * 2), seq=2, text="friend."))
    pull(player, 3)  # first chunk and half the second
    player.flush()
    pull(player, 2)
    heard = player.heard(1)
    assert heard.text == "Hello "
    assert heard.chunks_complete == 1
    assert heard.samples == BLOCK * 3
    # A later flush of another response does not rewrite what was heard of this one.
    player.write(chunk(np.ones(BLOCK), response_id=2, text="Next"))
    pull(player, 2)
    assert player.heard(1).samples == BLOCK * 3
    assert player.heard(2).text == "Next"


def test_resampling_happens_upstream_of_the_callback():
    class Doubler:  # a stand-in resampler: each sample twice
        def process(self, samples):
            return np.repeat(samples, 2)

    made = []

    def factory(src, dst):
        made.append((src, dst))
        return Doubler()

    player = make_player(48000, resampler_factory=factory)
    player.write(chunk(np.arange(10) / 10.0))
    out = np.zeros((40, 1), dtype=np.float32)
    player.callback(out, 40, StreamTime(0.0, 0.0), None)
    assert made == [(RATE, 48000)]
    np.testing.assert_allclose(out[:20, 0], np.repeat(np.arange(10) / 10.0, 2), rtol=1e-6)


def test_speech_at_another_rate_without_a_resampler_is_a_clear_error():
    player = make_player(48000)
    with pytest.raises(ValueError, match="24000 Hz cannot be played at 48000 Hz"):
        player.write(chunk(np.zeros(10)))


@pytest.mark.parametrize("rate", [0, -1, 1000, 10**6])
def test_unsupported_output_rate_is_rejected(rate):
    with pytest.raises(ValueError, match="unsupported output sample rate"):
        Player(rate)


def test_overflow_is_counted_not_hidden():
    player = make_player(RATE, capacity_seconds=0.1)
    player.write(chunk(np.ones(RATE)))
    assert player.stats().overflow_samples == RATE - int(0.1 * RATE)


def test_flush_takes_effect_within_one_block_on_a_real_time_device():
    player = make_player(RATE)
    stream = VirtualOutputStream(RATE, BLOCK, player.callback, keep=True)
    with stream:
        player.write(chunk(np.ones(RATE * 2)))
        time.sleep(0.15)
        blocks_before_flush = stream.blocks_played
        player.flush()
        time.sleep(0.1)
    assert stream.error is None
    played = stream.played()[:, 0]
    sounding = np.flatnonzero(played)
    assert len(sounding) > 0
    # One stretch of speech, then silence for good: nothing leaks out after the flush.
    assert sounding[-1] - sounding[0] + 1 == len(sounding)
    # Counted in device blocks, not seconds, so a busy machine cannot fail it: at most
    # the block being pulled while flush() ran still sounds.
    assert sounding[-1] < (blocks_before_flush + 2) * BLOCK


def test_pause_holds_the_place_and_resume_carries_on_from_it():
    player = make_player(RATE)
    ramp = np.arange(BLOCK * 4, dtype=np.float32) / (BLOCK * 4)
    player.write(chunk(ramp))
    first = pull(player, 1)
    player.pause()
    assert np.all(pull(player, 3) == 0.0)
    assert player.underruns == 0  # a pause is not an underrun
    player.resume()
    rest = pull(player, 3)
    np.testing.assert_array_equal(np.concatenate([first, rest])[: len(ramp), 0], ramp)


def test_reference_holds_every_played_sample_with_its_speaker_time():
    player = make_player(RATE, clock=lambda: 10.0)  # stream clock == monotonic clock
    assert player.drain_reference() is None
    player.write(chunk(np.full(BLOCK + 50, 0.5)))
    out = pull(player, 3, t0=10.0)
    reference, t = player.drain_reference()
    np.testing.assert_array_equal(reference, out[:, 0])
    assert t == pytest.approx(10.0 + 0.01)  # the first block's DAC time
    pull(player, 1, t0=20.0)
    more, t2 = player.drain_reference()
    assert len(more) == BLOCK and t2 == pytest.approx(20.0 + 0.01)


def test_going_silent_by_pause_or_flush_is_counted_once_with_its_time():
    player = make_player(RATE, clock=lambda: 1.0)  # stream clock == monotonic clock
    player.write(chunk(np.ones(RATE)))
    pull(player, 2, t0=1.0)
    player.pause()
    pull(player, 2, t0=2.0)
    assert player.silenced == 1 and player.silenced_at == pytest.approx(2.01)
    player.resume()
    pull(player, 1, t0=3.0)
    player.flush()
    pull(player, 1, t0=4.0)
    assert player.silenced == 2 and player.silenced_at == pytest.approx(4.01)


def test_a_response_starts_once_its_cushion_is_queued_then_plays_through():
    player = make_player(prebuffer_seconds=0.05)  # 1200 samples
    player.write(chunk(np.full(BLOCK * 3, 0.5), seq=0))  # 720: not enough yet
    assert np.all(pull(player, 2) == 0.0)
    assert player.underruns == 0
    player.write(chunk(np.full(BLOCK * 3, 0.5), seq=1))  # 1440 queued: go
    out = pull(player, 6)
    assert np.all(out[: BLOCK * 6] == 0.5)


def test_the_end_of_a_response_releases_a_short_answer_at_once():
    player = make_player(prebuffer_seconds=0.5)
    player.write(chunk(np.full(BLOCK, 0.5)))
    player.end_response(1)
    assert np.all(pull(player, 1) == 0.5)


def test_running_dry_grows_the_cushion_and_rebuffers():
    player = make_player(prebuffer_seconds=0.02)  # 480 samples
    player.write(chunk(np.full(BLOCK * 2, 0.5)))
    pull(player, 3)
    player.write(chunk(np.full(BLOCK * 3, 0.5), seq=1))  # the gap is counted: 960 now
    assert player.underruns == 1
    assert player.prebuffer == 960
    assert np.all(pull(player, 1) == 0.0)  # 720 < 960: still gathering
    player.write(chunk(np.full(BLOCK, 0.5), seq=2))  # 960: go
    assert np.all(pull(player, 4) == 0.5)
    assert player.underruns == 1


# --------------------------------------------------------------- a live stream (native duplex)
def test_a_live_stream_gathers_its_cushion_once_not_per_response():
    """A native model's frames: silence (response 0), then a run of speech (1), on and on."""
    player = make_player(prebuffer_seconds=0.1, live=True)  # 2400 samples
    frame = BLOCK * 8  # 80 ms
    player.write(chunk(np.zeros(frame), response_id=0))
    assert player.stats().queued_seconds == pytest.approx(0.08)
    pull(player, 1)
    assert player.played_position == 0  # gathering the cushion
    player.write(chunk(np.full(frame, 0.5), response_id=1))
    pull(player, 1)
    assert player.played_position == BLOCK  # 160 ms queued: playing
    # The next response arrives while the stream still has audio: it follows at once,
    # with no new cushion (a turn-based answer would gather one).
    pull(player, 14)  # 3600 of 3840 samples played
    player.write(chunk(np.full(frame, 0.25), response_id=2))
    assert np.all(pull(player, 1) == 0.5)
    assert np.all(pull(player, 1) == 0.25)
    assert player.underruns == 0


def test_a_gap_in_a_live_stream_is_an_underrun_whatever_response_follows():
    live = make_player(prebuffer_seconds=0.0, live=True)
    turns = make_player(prebuffer_seconds=0.0)
    for player in (live, turns):
        player.write(chunk(np.full(BLOCK, 0.5), response_id=1))
        pull(player, 3)  # ran dry
        player.write(chunk(np.full(BLOCK, 0.5), response_id=2))
    assert live.underruns == 1  # the stream stopped: heard as a stutter
    assert turns.underruns == 0  # one answer ended, the next began


def test_pause_mutes_a_live_stream_in_place_and_heard_leaves_the_muted_part_out():
    player = make_player(live=True)
    player.write(chunk(np.ones(BLOCK * 10), response_id=1, text="all"))
    assert np.all(pull(player, 2) == 1.0)
    player.pause()
    assert np.all(pull(player, 3) == 0.0)
    assert player.played_position == 5 * BLOCK  # time went on: no backlog builds up
    assert player.silenced == 1
    player.resume()
    assert np.all(pull(player, 2) == 1.0)
    heard = player.heard(1)
    assert heard.samples == 2 * BLOCK  # what played before the mute; the chunk was cut
    assert heard.chunks_complete == 0 and heard.text == ""
    assert player.underruns == 0


def test_a_live_stream_keeps_one_resampler_across_responses():
    made = []

    def factory(src, dst):
        made.append((src, dst))
        return type("Doubler", (), {"process": lambda self, x: np.repeat(x, 2)})()

    player = Player(48000, prebuffer_seconds=0.0, live=True, resampler_factory=factory)
    for rid in (0, 1, 1, 2):
        player.write(chunk(np.ones(100), response_id=rid))
    assert made == [(RATE, 48000)]
    player.flush()  # a flush starts a new stream, and a new filter
    player.write(chunk(np.ones(100), response_id=3))
    assert len(made) == 2


@pytest.mark.parametrize("live", [False, True])
def test_a_write_landing_inside_a_block_still_waits_for_its_cushion(live):
    """The device callback and the writer run on different threads: a response that
    arrives while a block is being filled must not slip out without its cushion."""
    from app.flow.spsc_ring import SpscRing

    player = make_player(prebuffer_seconds=0.1, live=live)  # 2400 samples
    landing: list[SpeechChunk] = []

    class Ring(SpscRing):
        @property
        def available(self) -> int:
            if landing:  # the writer runs right after the callback looked (or within)
                player.write(landing.pop())
            return self.write_pos - self.read_pos

    player._ring = Ring(RATE)
    pull(player, 2)  # idle
    landing.append(chunk(np.full(BLOCK * 8, 0.5)))  # 80 ms: less than the cushion
    assert np.all(pull(player, 3) == 0.0)  # gathering, even for the block it landed in
    player.write(chunk(np.full(BLOCK * 8, 0.5), seq=1))  # 160 ms: go
    assert np.all(pull(player, 16) == 0.5)
    assert player.underruns == 0


def test_a_live_stream_running_dry_in_its_silence_is_no_underrun_but_in_speech_it_is():
    """A native model listening yields silence: a late unit there is not heard (it only
    sets the stream later), and is counted apart; a gap after sound is a stutter."""
    player = make_player(live=True)
    player.write(chunk(np.zeros(BLOCK * 2), response_id=0))
    pull(player, 3)  # ran dry in silence
    player.write(chunk(np.full(BLOCK * 2, 0.5), response_id=1))
    assert (player.underruns, player.quiet_gaps) == (0, 1)
    pull(player, 3)  # ran dry in speech
    player.write(chunk(np.full(BLOCK, 0.5), response_id=1, seq=1))
    assert (player.underruns, player.quiet_gaps) == (1, 1)
    # Speech that trails off into silence before the gap: the gap is in the silence.
    player.write(chunk(np.concatenate([np.full(BLOCK, 0.5), np.zeros(BLOCK)]), response_id=1,
                       seq=2))
    pull(player, 4)
    player.write(chunk(np.full(BLOCK, 0.5), response_id=2))
    assert (player.underruns, player.quiet_gaps) == (1, 2)


def test_a_live_chunk_longer_than_the_cushion_waits_the_cushion_time_after_it_arrived():
    """1 s units: the chunk alone fills any cushion, but the next one comes a unit later,
    maybe later than this one did; playback holds it for the cushion's time instead."""
    now = [100.0]
    player = make_player(prebuffer_seconds=0.1, live=True, clock=lambda: now[0])
    pull(player, 1, t0=100.0)  # the callback learns the device clock (here the same)
    player.write(chunk(np.full(RATE, 0.5), response_id=1))  # 1 s
    assert np.all(pull(player, 5, t0=100.0) == 0.0)  # 50 ms after it arrived: holding
    assert np.all(pull(player, 3, t0=100.101) == 0.5)  # 100 ms on: playing
    assert player.underruns == 0


def _live_units(player: Player, now: list[float], units: list[tuple[bool, float]],
                flush_before: int | None = None) -> None:
    """A native model stepping in 1 s units (MiniCPM-o's): unit k is written, one burst,
    `lag` seconds after its end at k + 1, sound or silence; the device pulls 10 ms blocks
    on the same clock meanwhile. A barge-in flushes the player before unit
    `flush_before`; the silence after the cut run keeps its id and is not written, as
    the session does: the player is told it was skipped."""
    arrivals = [(k + 1 + lag, k, sound) for k, (sound, lag) in enumerate(units)]
    pending = sorted(arrivals)
    rid = cut = 0
    t = 0.0
    while t < len(units) + 2.0:
        while pending and pending[0][0] <= t:
            arrival, k, sound = pending.pop(0)
            now[0] = arrival
            if k == flush_before:
                player.flush()
                cut = rid
            if sound and (k == 0 or not units[k - 1][0]):  # a run starts: a new response
                rid += 1
            unit = chunk(np.full(RATE, 0.5 if sound else 0.0), response_id=rid, seq=k)
            if flush_before is not None and k >= flush_before and rid == cut:
                player.skip(unit)
            else:
                player.write(unit)
        pull(player, 1, t0=t)
        t += BLOCK / RATE


def _played_units(units: list[tuple[bool, float]], *, flush_before: int | None = None,
                  first_factor: float | None = None, learns: bool = True) -> Player:
    """A live player with a 150 ms cushion, after `_live_units` played `units` through it;
    `first_factor` and `learns` set its pace otherwise, to show what the pace is for."""
    now = [0.0]
    player = make_player(prebuffer_seconds=0.15, live=True, clock=lambda: now[0])
    if first_factor is not None:
        player._pace.first_factor = first_factor
    if not learns:
        player._pace._sound = deque(maxlen=0)  # each run starts on its own lag
    _live_units(player, now, units, flush_before)
    return player


# Listening units cost next to nothing; a turn's first unit less than the ones after.
FIRST_ANSWER = [(False, 0.02)] * 3 + [(True, 0.30), (True, 0.50), (True, 0.45)] \
    + [(False, 0.02)] * 2


def test_a_live_run_of_long_units_waits_until_later_units_can_keep_up():
    player = _played_units(FIRST_ANSWER)
    assert player.underruns == 0
    # Its lag over the listening units' (0.28 s) again: the first guess at 2x.
    assert player.paced_runs == 1 and player.paced_seconds == pytest.approx(0.28, abs=0.01)
    # Sized as a fixed cushion after the first unit (the pace's first guess at 1x), the
    # unit 0.2 s later than the first ran the speech dry.
    fixed = _played_units(FIRST_ANSWER, first_factor=1.0)
    assert fixed.underruns == 1


def test_a_later_run_is_paced_by_the_lags_the_stream_has_shown_with_silence_before_it():
    """The stream plays on through the listening units (silence queued), so the run that
    starts cheaply is held back by more silence, as late as the answers before ran."""
    second = [(True, 0.10), (True, 0.50), (False, 0.02)]
    player = _played_units(FIRST_ANSWER + second)
    assert player.underruns == 0 and player.paced_runs == 2
    fixed = _played_units(FIRST_ANSWER + second, first_factor=1.0, learns=False)
    assert fixed.underruns >= 1


def test_a_run_landing_in_queued_silence_is_held_back_by_more_silence():
    """A fast backend: the listening units' silence is still playing when the run comes
    (0.1 s late, under the stream's 0.17 s), so it is held back by silence written first."""
    units = [(False, 0.02)] * 3 + [(True, 0.10), (True, 0.28), (True, 0.2)] + [(False, 0.02)]
    player = _played_units(units)
    assert player.underruns == 0 and player.paced_runs == 1
    fixed = _played_units(units, first_factor=1.0)
    assert fixed.underruns == 1


def test_the_pace_measures_the_models_stream_through_a_barge_in_and_its_own_padding():
    """Chunks of a cut run, skipped, still took their time on the model's stream, and
    silence the player padded in did not: lags stay the model's (about 0.3-0.5 s)."""
    units = FIRST_ANSWER[:5] + [(False, 0.02)] * 3 \
        + [(True, 0.30), (True, 0.45), (True, 0.6), (False, 0.02), (True, 0.05), (True, 0.3)]
    player = _played_units(units, flush_before=5)
    assert player.underruns == 0
    # The last run landed in queued silence and was padded (0.58 + 0.15 - 0.03 s ahead
    # of it, about 0.1 s more than was queued); its second unit is 0.28 s late all the same.
    assert player.paced_runs == 3
    lags = list(player._pace.sound_lags)
    assert max(lags) == pytest.approx(0.58, abs=0.02)
    assert lags[-2:] == [pytest.approx(0.03, abs=0.02), pytest.approx(0.28, abs=0.02)]


def test_a_long_answer_after_short_ones_is_paced_by_its_own_first_unit_too():
    """What the stream has shown (one-unit answers, 0.28 s) says little about a longer
    turn whose units grow (0.22 to 0.48 s past the listening units'): its first unit's
    lag, doubled, holds it back as well."""
    units = [(False, 0.02)] * 2 + [(True, 0.30)] + [(False, 0.02)] * 2 \
        + [(True, 0.24), (True, 0.35), (True, 0.50), (False, 0.02)]
    player = _played_units(units)
    assert player.underruns == 0
    learned_only = _played_units(units, first_factor=1.0)
    assert learned_only.underruns == 1



def test_the_player_suits_the_backend_a_live_stream_and_the_cushion_it_asks_for():
    from app.model.contract import BackendSpec

    def spec(**kwargs) -> BackendSpec:
        return BackendSpec(family="x", unit_ms=80, audio_in_rate=16000, audio_out_rate=RATE,
                           frames_per_unit=0, **kwargs)

    local = Player(RATE)
    local.suit(spec(native_duplex=True))
    assert local.live and local.prebuffer == round(0.15 * RATE)
    served = Player(RATE)
    served.suit(spec(native_duplex=True, playback_cushion_ms=300))
    assert served.prebuffer == round(0.3 * RATE)
    served.write(chunk(np.full(round(0.2 * RATE), 0.5)))
    assert np.all(pull(served, 5) == 0.0)  # 200 ms queued: still gathering 300
    turns = Player(RATE)
    turns.suit(spec(native_duplex=False))
    assert not turns.live


def test_a_live_streams_sound_ends_where_the_resampler_has_given_all_of_it():
    """The resampler keeps its look-ahead back: the last ms of a chunk come out with the
    next one. A run's end is placed after them (a mute lifted at the written position let
    them be heard: a click after a barge-in)."""
    from app.flow.resample import StreamResampler

    player = Player(48000, prebuffer_seconds=0.0, live=True, resampler_factory=StreamResampler)
    player.write(SpeechChunk(np.full(RATE // 4, 0.5, np.float32), RATE, 1, 0))
    written, end = player.written_position, player.stream_position
    assert end > written
    player.write(SpeechChunk(np.zeros(RATE // 4, np.float32), RATE, 1, 1))
    ring = np.zeros(player.written_position, np.float32)
    player._ring.read_into(ring)
    assert np.abs(ring[written:end]).max() > 0.1  # the chunk's last sound, given late
    assert not ring[end:].any()  # then silence, the filter's ringing included
