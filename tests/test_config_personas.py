"""Personas: the shipped presets, the user's own, and broken files that do not spoil the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import personas as store
from app.config.personas import PersonaFile


def test_presets_are_at_least_six_distinct_readable_roles():
    library = store.load_all()
    assert library.problems == []
    presets = [p for p in library.personas if p.preset]
    assert len(presets) >= 6
    assert len({p.name for p in presets}) == len(presets)
    assert len({p.role_prompt for p in presets}) == len(presets)
    for persona in presets:
        assert len(persona.role_prompt) > 80, persona.id
        assert persona.description
        assert persona.builtin_voice  # presets name a voice the default model has
    ids = library.ids()
    for wanted in ("friendly-assistant", "language-tutor", "customer-service",
                   "cooking-helper", "interviewer", "storyteller"):
        assert wanted in ids
    assert library.get("language-tutor").language == "es"


def test_a_broken_user_file_is_named_and_the_others_load():
    folder = store.user_dir()
    folder.mkdir(parents=True)
    (folder / "good.json").write_text(json.dumps(
        {"name": "Good", "role_prompt": "You are good.", "voice": {}}), encoding="utf-8")
    (folder / "broken.json").write_text('{"name": "Broken", ', encoding="utf-8")
    (folder / "no-prompt.json").write_text('{"name": "No prompt"}', encoding="utf-8")
    (folder / "two-voices.json").write_text(json.dumps(
        {"name": "T", "role_prompt": "x", "voice": {"builtin": "A", "reference": "a.wav"}}),
        encoding="utf-8")
    library = store.load_all()
    problems = {p.path.name: p.message for p in library.problems}
    assert set(problems) == {"broken.json", "no-prompt.json", "two-voices.json"}
    assert "not valid JSON" in problems["broken.json"]
    assert "role_prompt" in problems["no-prompt.json"]
    assert "either" in problems["two-voices.json"]
    assert "broken.json" in library.problems[0].describe()
    good = library.get("good")
    assert good is not None and not good.preset
    assert len([p for p in library.personas if p.preset]) >= 6


def test_user_persona_round_trip_with_a_reference_recording():
    voice = store.voices_dir() / "me.wav"
    persona = PersonaFile(id="my-coach", name="My coach", role_prompt="You coach me.",
                          language="de", description="mine", reference_audio=voice)
    saved = store.save_user(persona)
    stored = json.loads(saved.path.read_text(encoding="utf-8"))
    assert stored["voice"] == {"reference": "voices/me.wav"}  # relative: the folder may move
    loaded = store.load_all().get("my-coach")
    assert loaded == saved
    assert loaded.reference_audio == voice
    as_contract = loaded.to_persona()
    assert as_contract.voice.reference_audio == voice and as_contract.voice.builtin is None
    assert as_contract.language == "de"


def test_a_user_copy_replaces_the_preset_of_the_same_id():
    preset = store.load_all().get("storyteller")
    edited = PersonaFile(id=preset.id, name="Bedtime stories", role_prompt="Whisper stories.",
                         builtin_voice="Chelsie")
    store.save_user(edited)
    library = store.load_all()
    assert [p.name for p in library.personas if p.id == "storyteller"] == ["Bedtime stories"]
    store.delete_user(library.get("storyteller"))
    assert store.load_all().get("storyteller").preset


def test_presets_cannot_be_deleted_and_bad_personas_are_not_written():
    with pytest.raises(ValueError):
        store.delete_user(store.load_all().get("interviewer"))
    with pytest.raises(ValueError):
        store.save_user(PersonaFile(id="x", name="", role_prompt="y"))
    assert not (store.user_dir() / "x.json").exists()


def test_missing_presets_folder_is_reported(tmp_path):
    library = store.load_all(presets=tmp_path / "none", users=tmp_path / "users")
    assert library.personas == []
    assert "no persona presets" in library.problems[0].message


def test_unique_ids():
    assert store.slug("  Mon Tuteur! ") == "mon-tuteur"
    assert store.unique_id("Storyteller", ["storyteller", "storyteller-2"]) == "storyteller-3"
    assert store.slug("???") == "persona"


def test_presets_dir_can_be_moved(monkeypatch, tmp_path):
    monkeypatch.setenv("DUETTO_ASSETS_DIR", str(tmp_path))
    assert store.presets_dir() == Path(tmp_path) / "personas"
