"""MoshiBackend through the contract on the tiny model: spec, per-frame outputs, the
persona prefix and its cache, barge-in / force-listen / interrupt, unit checks."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tiny_models

from app.model.contract import (
    Backend,
    BackendError,
    Control,
    Decision,
    ModelSource,
    Persona,
    Quant,
    Unit,
    Voice,
)
from app.model.moshi import loader, persona
from app.model.moshi.backend import BARGE_HOLD_FRAMES, MoshiBackend
from app.model.moshi.engine import NUM_CODEBOOKS
from app.model.moshi.text import system_prompt

moshi_tiny_factory = tiny_models.moshi_tiny_factory
ROLE = "You are a calm tutor."


def _unit(i: int, frames: int = 1, rate: int = 24000, seed: int = 0) -> Unit:
    rng = np.random.default_rng(seed * 1000 + i)
    n = frames * rate * 8 // 100
    audio = (0.1 * rng.standard_normal(n)).astype(np.float32)
    return Unit(i, i * 0.08, 0.08 * frames, rate, audio)


@pytest.fixture(scope="module")
def loaded(moshi_tiny_factory):
    return loader.load(ModelSource(local_dir=moshi_tiny_factory()), Quant.BF16,
                       lambda *_: None, device="cpu")


@pytest.fixture
def backend(loaded) -> MoshiBackend:
    """A fresh backend (empty voice cache) on the module's loaded tiny model."""
    b = MoshiBackend(device="cpu")
    b.attach(loaded)
    yield b
    b.close()


def _persona(voice: str | None = "tiny_voice", role: str = ROLE) -> Persona:
    return Persona("tutor", role, voice=Voice(builtin=voice) if voice else Voice())


def test_spec(backend: MoshiBackend) -> None:
    spec = backend.spec
    assert isinstance(backend, Backend)
    assert (spec.family, spec.unit_ms, spec.audio_in_rate, spec.audio_out_rate) == (
        "moshi", 80, 24000, 24000)
    assert spec.native_duplex and spec.accepts_reference_voice
    assert spec.voices == ("tiny_voice",)


def test_each_frame_yields_decision_text_and_80ms_of_speech(backend: MoshiBackend) -> None:
    backend.start(_persona())
    speech_frames = 0
    for i in range(12):
        outs = list(backend.step(_unit(i), Control()))
        assert outs[0].decision in (Decision.SPEAK, Decision.LISTEN, Decision.END_OF_TURN)
        chunks = [o.speech for o in outs if o.speech is not None]
        assert len(chunks) == 1 and chunks[0].audio.shape == (1920,)
        assert chunks[0].sample_rate == 24000 and chunks[0].audio.dtype == np.float32
        texts = [o.text for o in outs if o.text]
        assert texts == ([chunks[0].text_span] if chunks[0].text_span else [])
        if outs[0].decision is Decision.SPEAK:
            speech_frames += 1
            assert chunks[0].response_id >= 1
    # The tiny model's random voice is loud: it speaks (the rule is documented).
    assert speech_frames > 0


def test_unit_length_is_whole_frames() -> None:
    assert MoshiBackend(unit_ms=160).spec.unit_ms == 160
    with pytest.raises(ValueError, match="multiple of 80"):
        MoshiBackend(unit_ms=100)


def test_a_unit_of_several_frames_is_stepped_frame_by_frame(backend: MoshiBackend) -> None:
    backend.start(_persona())
    outs = list(backend.step(_unit(0, frames=3), Control()))
    assert sum(o.decision is not None for o in outs) == 3
    assert sum(o.speech is not None for o in outs) == 3


def test_bad_units_are_refused(backend: MoshiBackend) -> None:
    with pytest.raises(BackendError, match="start"):
        backend.step(_unit(0), Control())
    backend.start(_persona())
    with pytest.raises(BackendError, match="24 kHz"):
        backend.step(_unit(0, rate=16000), Control())
    bad = Unit(0, 0.0, 0.05, 24000, np.zeros(1200, dtype=np.float32))
    with pytest.raises(BackendError, match="1920"):
        backend.step(bad, Control())


def test_unknown_voice_and_pt_voice_are_explained(backend: MoshiBackend, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown voice") as info:
        backend.start(_persona("nobody"))
    assert "tiny_voice" in info.value.hint
    pt = tmp_path / "NATF0.pt"
    pt.write_bytes(b"x")
    with pytest.raises(BackendError, match="prepared voice"):
        backend.start(Persona("p", ROLE, voice=Voice(reference_audio=pt)))


def test_persona_prefix_order_and_length(backend: MoshiBackend) -> None:
    """Voice prompt (as the model's own audio, text PAD), 6 silent frames, the role in
    <system> tags one token a frame, 6 silent frames; the user's stream a 440 Hz sine."""
    loaded = backend.loaded
    stepper = backend._stepper
    stepper.record_inputs = True
    backend.start(_persona())
    voice_audio = persona.read_voice(loaded.folder / "voices" / "tiny_voice.wav")
    voice_codes = persona.encode_voice(loaded.model.audio_encoder, voice_audio)
    role_ids = loaded.vocab.encode(system_prompt(ROLE))
    n_voice = voice_codes.shape[1]
    assert n_voice == 13  # 1 s of voice in 80 ms frames, the last one padded
    stages = [f.stage for f in backend.last_prefix]
    assert stages == (["voice"] * n_voice + ["silence"] * 6 + ["text"] * len(role_ids)
                      + ["silence"] * 6)
    # What the model actually read, step by step (frame t's tokens at t + delay).
    inputs = stepper.inputs
    assert len(inputs) == len(stages)
    pad, silence, sine = loaded.vocab.pad_id, backend._silence, backend._sine
    for t in range(1, len(stages)):
        tokens = inputs[t]
        stage = stages[t]
        expected_text = role_ids[t - n_voice - 6] if stage == "text" else pad
        assert tokens[0] == expected_text, t
        own = [int(c) for c in voice_codes[:, t]] if stage == "voice" else list(silence)
        assert tokens[1] == own[0], t  # semantic codebook: this frame
        assert tokens[1 + NUM_CODEBOOKS] == sine[0], t  # the user's semantic: the sine
        if t >= 2:
            prev = stages[t - 1]
            own_prev = ([int(c) for c in voice_codes[:, t - 1]] if prev == "voice"
                        else list(silence))
            assert tokens[2:1 + NUM_CODEBOOKS] == own_prev[1:], t  # acoustic: one frame late
            assert tokens[2 + NUM_CODEBOOKS:] == list(sine[1:]), t
    assert "<system>" in system_prompt(ROLE) and system_prompt(system_prompt(ROLE)) == \
        system_prompt(ROLE)


def _run(b: MoshiBackend, units: int = 5) -> list[tuple]:
    seen = []
    for i in range(units):
        for out in b.step(_unit(i, seed=7), Control()):
            seen.append((out.decision, out.text,
                         None if out.speech is None else out.speech.audio.copy()))
    return seen


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] == y[1] and (x[2] is None or np.allclose(x[2], y[2], atol=1e-6))
        for x, y in zip(a, b, strict=True))


def test_prepared_voice_is_reused(backend: MoshiBackend, loaded) -> None:
    backend.start(_persona())
    first_fed = backend.timing.prefix_frames
    first = _run(backend)
    assert backend.prefix_from_cache == "" and first_fed == len(backend.last_prefix)
    # Same persona again: nothing is fed, the conversation is the same.
    backend.start(_persona())
    assert backend.prefix_from_cache == "persona" and backend.timing.prefix_frames == 0
    assert _same(_run(backend), first)
    # Same voice, new role: only the role part is fed, after the cached voice prompt...
    backend.start(_persona(role="You are a pirate."))
    assert backend.prefix_from_cache == "voice"
    assert backend.timing.prefix_frames == sum(f.stage != "voice" for f in backend.last_prefix)
    cached = _run(backend)
    # ...and that gives what a fresh backend feeding everything gives.
    fresh = MoshiBackend(device="cpu")
    fresh.attach(loaded)
    fresh.start(_persona(role="You are a pirate."))
    assert fresh.prefix_from_cache == ""
    assert _same(_run(fresh), cached)
    fresh.close()


def test_reference_recording_voice(backend: MoshiBackend) -> None:
    path = backend.loaded.folder / "voices" / "tiny_voice.wav"
    backend.start(Persona("p", ROLE, voice=Voice(reference_audio=path)))
    assert [f.stage for f in backend.last_prefix].count("voice") == 13


def test_no_voice_no_role(backend: MoshiBackend) -> None:
    backend.start(_persona(voice=None, role=""))
    assert [f.stage for f in backend.last_prefix] == ["silence"] * 12


def _silent(outs) -> bool:
    speech = [o.speech for o in outs if o.speech is not None]
    return (outs[0].decision is not Decision.SPEAK and not any(o.text for o in outs)
            and all(not s.audio.any() for s in speech))


def test_barge_in_mutes_until_the_turn_ends(backend: MoshiBackend) -> None:
    backend.start(_persona())
    assert not _silent(list(backend.step(_unit(0), Control())))  # tiny model talks
    assert _silent(list(backend.step(_unit(1), Control(barge_in=True))))
    for i in range(2, 6):
        assert _silent(list(backend.step(_unit(i), Control())))
    # The model's own stream held silence while muted (its memory matches what was heard).
    recent = backend._stepper.grid
    assert any(slot[0] == backend.loaded.vocab.pad_id for slot in recent.values())
    # The user's turn ends: the model may speak again.
    backend.step(_unit(6), Control(turn_ended=True))
    assert not _silent(list(backend.step(_unit(7), Control())))


def test_barge_in_hold_runs_out(backend: MoshiBackend) -> None:
    backend.start(_persona())
    backend.step(_unit(0), Control(barge_in=True))
    for i in range(1, BARGE_HOLD_FRAMES):
        assert _silent(list(backend.step(_unit(i), Control())))
    assert not _silent(list(backend.step(_unit(BARGE_HOLD_FRAMES + 1), Control())))


def test_force_listen_mutes_while_held(backend: MoshiBackend) -> None:
    backend.start(_persona())
    for i in range(3):
        assert _silent(list(backend.step(_unit(i), Control(force_listen=True))))
    assert not _silent(list(backend.step(_unit(3), Control())))


def test_interrupt_from_another_thread(backend: MoshiBackend) -> None:
    backend.start(_persona())
    thread = threading.Thread(target=backend.interrupt)
    thread.start()
    thread.join()
    assert _silent(list(backend.step(_unit(0), Control())))
    backend.heard("anything")  # a no-op for a stream model, but callable
    assert _silent(list(backend.step(_unit(1), Control())))


def test_response_ids_count_runs_of_speech(backend: MoshiBackend) -> None:
    backend.start(_persona())
    ids = []
    for i in range(4):
        ids += [o.speech.response_id for o in backend.step(_unit(i), Control()) if o.speech]
    backend.step(_unit(4), Control(barge_in=True))
    controls = [Control(turn_ended=True), Control(), Control()]
    later = [o.speech for i, c in enumerate(controls)
             for o in backend.step(_unit(5 + i), c) if o.speech]
    assert later[0].response_id == ids[-1] + 1 and later[0].seq == 0
    assert [c.seq for c in later] == [0, 1, 2]
