"""Corrupt and missing persona files and voice recordings never stop the app: listing
skips a broken file and names it; starting with a broken voice falls back to the model's
default voice, with a note naming the recording and what is wrong with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from app.config import personas as store
from app.flow.persona_fit import fit_persona
from app.model.contract import BackendSpec, Persona, Quant, Voice

# Specs of the two families, as their backends give them (no weights needed).
MOSHI = BackendSpec(family="moshi", unit_ms=80, audio_in_rate=24000, audio_out_rate=24000,
                    frames_per_unit=0, native_duplex=True, voices=("NATF0",),
                    vram_gib={Quant.BF16: 1.0}, accepts_reference_voice=True)
QWEN = BackendSpec(family="qwen2.5-omni", unit_ms=1000, audio_in_rate=16000,
                   audio_out_rate=24000, frames_per_unit=1, native_duplex=False,
                   voices=("Chelsie", "Ethan"), vram_gib={Quant.BF16: 1.0})


@pytest.mark.parametrize(("content", "words"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (bytes(range(256)), "not UTF-8"),
    (b"", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"name": null, "role_prompt": 5}', "'name' must be text"),
    (b'{"name": "A", "role_prompt": "B", "language": ' + b"1" * 5000 + b"}", "digits"),
    (b'{"name": "A", "role_prompt": "B", "voice": "Chelsie"}', "'voice' must be an object"),
    (b'{"name": "A", "role_prompt": "B", "voice": {"reference": 3}}', "file path"),
])
def test_listing_skips_a_corrupt_persona_file_and_names_it(content, words):
    folder = store.user_dir()
    folder.mkdir(parents=True)
    (folder / "bad.json").write_bytes(content)
    (folder / "good.json").write_text(json.dumps({"name": "Good", "role_prompt": "Hi."}))
    (folder / "folder.json").mkdir()
    library = store.load_all()
    problems = {p.path.name: p.describe() for p in library.problems}
    assert set(problems) == {"bad.json", "folder.json"}
    assert "bad.json" in problems["bad.json"] and words in problems["bad.json"]
    assert library.get("good") is not None
    assert len([p for p in library.personas if p.preset]) >= 6


def _voice(tmp_path, kind):
    path = tmp_path / "voices" / f"{kind}.wav"
    path.parent.mkdir(exist_ok=True)
    if kind == "not-audio":
        path.write_text("not a recording\n" * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no-samples":
        sf.write(str(path), np.zeros((0, 1), np.float32), 24000)
    elif kind == "too-short":
        sf.write(str(path), np.zeros(240, np.float32), 24000)
    elif kind == "nan":
        samples = np.full(24000, 0.1, np.float32)
        samples[5] = np.nan
        sf.write(str(path), samples, 24000, subtype="FLOAT")
    elif kind == "good":
        sf.write(str(path), 0.1 * np.sin(np.arange(48000) / 10).astype(np.float32), 24000)
    return path


@pytest.mark.parametrize(("kind", "words"), [
    ("missing", "not found"),
    ("not-audio", "is not audio"),
    ("empty", "is empty"),
    ("no-samples", "holds no audio"),
    ("too-short", "too short"),
    ("nan", "not numbers"),
])
def test_a_broken_voice_recording_falls_back_to_the_default_voice(tmp_path, kind, words):
    path = _voice(tmp_path, kind)
    persona = Persona("Tutor", "You teach.", voice=Voice(reference_audio=path))
    fitted, note = fit_persona(persona, MOSHI)
    assert fitted.voice == Voice(builtin="NATF0")
    assert fitted.role_prompt == persona.role_prompt
    assert path.name in note and words in note and "NATF0" in note


def test_a_good_recording_is_kept_and_a_model_without_recordings_says_so(tmp_path):
    path = _voice(tmp_path, "good")
    persona = Persona("Tutor", "You teach.", voice=Voice(reference_audio=path))
    assert fit_persona(persona, MOSHI) == (persona, "")
    fitted, note = fit_persona(persona, QWEN)
    assert fitted.voice == Voice(builtin="Chelsie") and "reference recording" in note


def test_a_persona_file_pointing_at_a_broken_voice_lists_and_starts(tmp_path):
    """The whole way: the user's file names a recording that is not audio."""
    folder = store.user_dir()
    voice = folder / "voices" / "me.wav"
    voice.parent.mkdir(parents=True)
    voice.write_text("oops")
    (folder / "me.json").write_text(json.dumps(
        {"name": "Me", "role_prompt": "Be me.", "voice": {"reference": "voices/me.wav"}}))
    library = store.load_all()
    persona = library.get("me")
    assert persona is not None and library.problems == []
    fitted, note = fit_persona(persona.to_persona(), MOSHI)
    assert fitted.voice.builtin == "NATF0" and "me.wav" in note


def test_a_voice_of_another_family_falls_back_where_the_model_names_none():
    """Qwen's 'Chelsie' asked of Moshi before it is loaded (its spec names no voices yet):
    the default voice, not a start that fails with "unknown voice"."""
    import dataclasses

    persona = Persona("Chef", "You cook.", voice=Voice(builtin="Chelsie"))
    fitted, note = fit_persona(persona, dataclasses.replace(MOSHI, voices=()))
    assert fitted.voice == Voice() and "Chelsie" in note and "default voice" in note


def test_unknown_builtin_voice_falls_back():
    same = Persona("a", "p", voice=Voice(builtin="Ethan"))
    assert fit_persona(same, QWEN) == (same, "")
    unknown, note = fit_persona(Persona("a", "p", voice=Voice(builtin="Zed")), QWEN)
    assert unknown.voice.builtin == "Chelsie" and "Zed" in note
    default = Persona("a", "p")
    assert fit_persona(default, QWEN) == (default, "")
