"""Settings: defaults, round trip through the file, atomic writes, damaged files."""

from __future__ import annotations

import json
import os

import pytest

from app.config import settings as store
from app.config.atomic import write_text_atomic


def test_missing_file_gives_defaults():
    loaded = store.load()
    assert not loaded.existed
    assert loaded.notes == ()
    assert loaded.settings == store.Settings()


def test_settings_round_trip_through_the_file():
    chosen = store.Settings()
    chosen.persona = "storyteller"
    chosen.model.local_dir = "/models/qwen"
    chosen.model.quant = "int8"
    chosen.devices.mic = "USB"
    chosen.devices.camera_on = False
    chosen.conversation.turn_patience = 5
    chosen.conversation.end_of_turn_model = False
    chosen.conversation.push_to_talk = True
    path = store.save(chosen)
    assert path == store.settings_path()
    assert json.loads(path.read_text())["version"] == store.SETTINGS_VERSION
    loaded = store.load()
    assert loaded.existed and loaded.notes == ()
    assert loaded.settings == chosen
    assert loaded.settings != store.Settings()


def test_a_damaged_file_is_set_aside_and_defaults_load():
    path = store.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"persona": "storyteller", "model": {', encoding="utf-8")
    loaded = store.load()
    assert loaded.settings == store.Settings()
    assert loaded.set_aside_to is not None and loaded.set_aside_to.exists()
    assert loaded.set_aside_to.read_text() == '{"persona": "storyteller", "model": {'
    assert not path.exists()
    assert "damaged" in loaded.notes[0] and loaded.set_aside_to.name in loaded.notes[0]
    # The next save writes a good file again.
    store.save(loaded.settings)
    assert store.load().notes == ()


def test_a_json_list_is_damaged_too():
    path = store.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]", encoding="utf-8")
    loaded = store.load()
    assert loaded.set_aside_to is not None
    assert loaded.settings == store.Settings()


def test_wrong_values_fall_back_one_by_one():
    path = store.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "persona": "interviewer",
        "first_run_done": "yes",  # not a bool
        "model": {"quant": 8, "device": "tpu", "local_dir": "/m"},
        "conversation": {"turn_patience": 99, "echo_cancellation": False},
        "devices": "camera",  # not a group
        "unknown": 1,
    }), encoding="utf-8")
    loaded = store.load()
    s = loaded.settings
    assert s.persona == "interviewer"
    assert s.model.local_dir == "/m"
    assert s.first_run_done is False
    assert s.model.quant == "nf4"
    assert s.model.device == "auto"
    assert s.conversation.turn_patience == 5
    assert s.conversation.echo_cancellation is False
    assert s.devices == store.DeviceSettings()
    text = " ".join(loaded.notes)
    for name in ("first_run_done", "model.quant", "tpu", "devices", "end-of-turn patience"):
        assert name in text
    assert loaded.set_aside_to is None  # readable files are not moved


def test_ints_are_accepted_for_floats_but_bools_are_not_ints():
    settings, notes = store.from_dict({"conversation": {"barge_in_min_speech": 1}})
    assert settings.conversation.barge_in_min_speech == 1.0
    assert isinstance(settings.conversation.barge_in_min_speech, float)
    assert notes == []
    settings, notes = store.from_dict({"conversation": {"barge_in_min_speech": True,
                                                        "turn_patience": True}})
    assert settings.conversation.barge_in_min_speech == 0.3
    assert settings.conversation.turn_patience == 3
    assert len(notes) == 2


@pytest.mark.parametrize(("old_silence", "step"), [(0.6, 3), (0.2, 1), (1.2, 5), (3.0, 5),
                                                    (0.9, 4)])
def test_an_old_files_end_of_turn_silence_becomes_the_nearest_patience_step(old_silence, step):
    settings, notes = store.from_dict({"conversation": {"end_of_turn_silence": old_silence}})
    assert settings.conversation.turn_patience == step
    assert settings.conversation.end_of_turn_model  # the model is on for old files too
    assert notes == []


def test_old_silence_steps_are_the_flows_patience_silences():
    from app.flow.turn_end import PATIENCE

    assert tuple(PATIENCE[k].silence for k in store.PATIENCE_STEPS) == store.OLD_SILENCE_STEPS
    assert store.Settings().conversation.turn_patience == 3


def test_a_failed_write_keeps_the_old_file(monkeypatch):
    chosen = store.Settings(persona="storyteller")
    path = store.save(chosen)

    def broken_replace(src, dst):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", broken_replace)
        with pytest.raises(OSError):
            store.save(store.Settings(persona="interviewer"))
    assert store.load().settings.persona == "storyteller"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_write_text_atomic_replaces_whole_content(tmp_path):
    target = tmp_path / "deep" / "file.json"
    write_text_atomic(target, "a" * 1000)
    write_text_atomic(target, "b")
    assert target.read_text() == "b"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_recordings_default_to_the_data_folder(tmp_path):
    chosen = store.Settings()
    assert chosen.recordings_dir() == tmp_path / "data" / "recordings"
    chosen.conversation.record_dir = str(tmp_path / "elsewhere")
    assert chosen.recordings_dir() == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (bytes(range(128, 256)) * 4, "not text"),  # random bytes that are not UTF-8
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"[1, 2]", "list"),
        (b'"persona"', "string"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        ('{"persona": "caf\u00e9"'.encode("latin-1"), "not text"),
    ],
)
def test_any_undecodable_file_is_set_aside_byte_for_byte(content, why):
    path = store.settings_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    loaded = store.load()
    assert loaded.settings == store.Settings()
    assert loaded.set_aside_to is not None
    assert loaded.set_aside_to.read_bytes() == content  # kept as it was, for the user
    assert not path.exists()
    note = loaded.notes[0]
    assert why in note and loaded.set_aside_to.name in note and "default settings" in note


def test_a_bad_quantization_is_refused_when_read_not_at_start():
    path = store.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"persona": "storyteller",
                                "model": {"quant": "nf9", "local_dir": "/m"}}))
    loaded = store.load()
    assert loaded.settings.model.quant == "nf4"
    assert loaded.settings.model.local_dir == "/m"  # the rest of the group is kept
    assert loaded.settings.persona == "storyteller"
    assert any("model.quant" in n and "nf9" in n for n in loaded.notes)
    assert loaded.set_aside_to is None


def test_every_quantization_the_app_offers_is_accepted():
    for quant in store.QUANT_CHOICES:
        settings, notes = store.from_dict({"model": {"quant": quant}})
        assert settings.model.quant == quant and notes == []
