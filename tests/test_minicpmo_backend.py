"""MiniCPMOBackend behind the contract: what a unit yields, barge-in, interrupt, refusals.

The tiny checkpoint (tests/minicpmo_tiny.py) is loaded once; its turns are scripted with
the schedule test instrument (app/model/minicpm_o/schedule.py), given to attach() so the
shared folder is left as built.
"""

from __future__ import annotations

import numpy as np
import pytest
from minicpmo_tiny import tiny_folder, tiny_loaded

from app.model import families, registry
from app.model.contract import (
    BackendError,
    Control,
    Decision,
    Persona,
    Unit,
    VideoFrame,
    Voice,
)
from app.model.minicpm_o.backend import MiniCPMOBackend
from app.model.minicpm_o.duplex import Sampling
from app.model.minicpm_o.schedule import SAID, SpeakSchedule

PERSONA = Persona("t", "Be brief.")


def _backend(runs, **sampling) -> MiniCPMOBackend:
    backend = MiniCPMOBackend(sampling=Sampling(force_listen_count=0, **sampling))
    backend.attach(tiny_loaded(), SpeakSchedule(tuple(runs)))
    backend.start(PERSONA)
    return backend


def _unit(k: int, frame: bool = True, rate: int = 16000, seconds: float = 1.0) -> Unit:
    rng = np.random.default_rng(k)
    audio = (0.05 * rng.standard_normal(int(rate * seconds))).astype(np.float32)
    frames = (VideoFrame(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), k, k),)
    return Unit(k, float(k), seconds, rate, audio, frames if frame else ())


def _step(backend, k, control: Control | None = None, frame=True):
    """The unit's decisions and words (its speech is checked on its own)."""
    outputs = backend.step(_unit(k, frame), control or Control())
    return [(o.decision, o.text) for o in outputs if o.speech is None]


def test_each_unit_yields_its_decision_and_words():
    backend = _backend([(1, 3)])
    L, S, E = Decision.LISTEN, Decision.SPEAK, Decision.END_OF_TURN
    assert _step(backend, 0) == [(L, "")]
    assert _step(backend, 1) == [(S, ""), (None, SAID)]
    # The turn's last unit filled its second of speech: its end (and END_OF_TURN) come
    # after its speech (live_voice.py).
    assert _step(backend, 2, frame=False) == [(S, ""), (None, SAID), (E, "")]
    assert _step(backend, 3) == [(L, "")]
    _step(backend, 4)
    assert backend.counts.units == 5 and backend.counts.frames == 4
    assert backend.counts.audio_positions == 50


def test_a_barge_in_closes_the_open_turn_and_holds_until_the_turn_ends():
    backend = _backend([(0, 100)])
    assert _step(backend, 0)[0] == (Decision.SPEAK, "")
    ids = backend.decoder.ids
    # The flow cut the run: the model's turn is closed, then it listens.
    assert _step(backend, 1, Control(barge_in=True)) == [(Decision.END_OF_TURN, "")]
    assert backend.results[-1].tokens == (ids.turn_eos, ids.listen, ids.unit_end)
    assert _step(backend, 2, Control(barge_in=True)) == [(Decision.LISTEN, "")]
    assert _step(backend, 3, Control(force_listen=True)) == [(Decision.LISTEN, "")]
    # The user's turn is over: the model decides again (and, scripted, speaks).
    assert _step(backend, 4, Control(turn_ended=True))[0] == (Decision.SPEAK, "")


def test_interrupt_from_another_thread_stops_the_unit_within_a_step():
    backend = _backend([(0, 100)])
    steer = backend.decoder.steer
    calls = []

    def interrupting(unit, j, turn_open):
        calls.append(j)
        if j == 2:
            backend.interrupt()  # as the listener thread does at a barge-in
        return steer(unit, j, turn_open)

    backend.decoder.steer = interrupting
    outputs = _step(backend, 0)
    assert calls == [0, 1, 2]
    assert outputs == [(Decision.SPEAK, ""), (None, SAID[:2]), (Decision.END_OF_TURN, "")]
    assert backend.results[-1].stopped
    # Consumed: the next unit is the model's own again.
    backend.decoder.steer = steer
    assert _step(backend, 1)[0] == (Decision.SPEAK, "")


def test_an_interrupt_between_units_makes_the_next_one_listen():
    backend = _backend([(0, 100)])
    _step(backend, 0)
    backend.interrupt()
    assert _step(backend, 1) == [(Decision.END_OF_TURN, "")]
    assert _step(backend, 2)[0] == (Decision.SPEAK, "")


def test_a_new_conversation_starts_from_the_system_prefix_again():
    backend = _backend([(0, 2)])
    prefix = backend.decoder.cache_length
    for k in range(3):
        _step(backend, k)
    assert backend.decoder.cache_length > prefix
    backend.start(PERSONA)
    assert backend.decoder.cache_length == prefix
    assert backend.results == [] and backend.counts.units == 0
    assert not backend.decoder.state.turn_open


def test_bad_units_and_calls_are_refused_with_what_to_do():
    backend = MiniCPMOBackend()
    with pytest.raises(BackendError, match="not loaded"):
        backend.step(_unit(0), Control())
    backend.attach(tiny_loaded())
    with pytest.raises(BackendError, match="no conversation"):
        backend.step(_unit(0), Control())
    with pytest.raises(BackendError, match="built-in voice"):
        backend.start(Persona("t", "", voice=Voice(builtin="Chelsie")))
    backend.start(PERSONA)
    with pytest.raises(BackendError, match="16 kHz"):
        backend.step(_unit(0, rate=24000), Control())
    with pytest.raises(BackendError, match="1 s of audio"):
        backend.step(_unit(0, seconds=0.5), Control())
    with pytest.raises(ValueError, match="1000 ms"):
        MiniCPMOBackend(unit_ms=500)


def test_the_family_is_registered_and_offered_for_download():
    family = families.get("minicpm-o")
    assert families.backend_class("minicpm-o") is MiniCPMOBackend
    assert families.of_folder(tiny_folder()) == "minicpm-o"
    assert "minicpm-o" in families.known() and family.complete  # it speaks
    assert registry.get("minicpm-o-4.5").supported
    spec = MiniCPMOBackend().spec
    assert (spec.native_duplex, spec.unit_ms, spec.audio_in_rate, spec.frames_per_unit) == (
        True, 1000, 16000, 1)


def test_a_reply_schedule_answers_each_turn_the_flow_ends_and_yields_to_a_barge_in():
    """The bench's instrument: the tiny model answers where the scenario's turns end."""
    from app.model.minicpm_o.schedule import ReplySchedule

    backend = MiniCPMOBackend(sampling=Sampling(force_listen_count=0))
    backend.attach(tiny_loaded(), ReplySchedule(3))
    backend.start(PERSONA)
    L, S, E = Decision.LISTEN, Decision.SPEAK, Decision.END_OF_TURN
    assert _step(backend, 0) == [(L, "")]
    assert _step(backend, 1, Control(turn_ended=True))[0] == (S, "")
    assert _step(backend, 2)[0] == (S, "")
    assert _step(backend, 3) == [(S, ""), (None, SAID), (E, "")]  # the answer's last
    assert _step(backend, 4) == [(L, "")]
    assert _step(backend, 5, Control(turn_ended=True))[0] == (S, "")
    assert _step(backend, 6, Control(barge_in=True)) == [(E, "")]  # cut short
    assert _step(backend, 7) == [(L, "")]  # and not taken up again


def test_a_reply_schedule_answers_when_the_user_falls_quiet():
    from app.model.minicpm_o.schedule import ReplySchedule

    backend = MiniCPMOBackend(sampling=Sampling(force_listen_count=0))
    backend.attach(tiny_loaded(), ReplySchedule(2))
    backend.start(PERSONA)
    rng = np.random.default_rng(0)
    talk = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    quiet = np.zeros(16000, np.float32)
    ends = talk.copy()
    ends[10000:] = 0.0  # speech, then 0.375 s of quiet

    def step(k, audio):
        return [(o.decision, o.text) for o in backend.step(Unit(k, k, 1.0, 16000, audio),
                                                           Control()) if o.speech is None]

    assert step(0, quiet) == [(Decision.LISTEN, "")]  # nobody has spoken: no answer
    assert step(1, talk) == [(Decision.LISTEN, "")]  # the user talks on
    assert step(2, ends)[0] == (Decision.SPEAK, "")  # and stops: the answer starts
    last = step(3, quiet)
    assert last[0] == (Decision.SPEAK, "") and last[-1] == (Decision.END_OF_TURN, "")
    assert step(4, quiet) == [(Decision.LISTEN, "")]  # one answer per turn
