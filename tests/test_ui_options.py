"""From settings, persona and command line to the next conversation's options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models

from app.config import personas as persona_store
from app.config.settings import Settings
from app.model.contract import BackendError, Quant
from app.ui.options import (
    LaunchOverrides,
    build_options,
    is_self_check,
)

moshi_tiny_factory = tiny_models.moshi_tiny_factory


def _persona(pid: str = "cooking-helper"):
    return persona_store.load_all().get(pid)


def test_command_line_wins_over_settings(tmp_path):
    settings = Settings()
    settings.model.local_dir = "/settings/model"
    settings.devices.mic = "3"
    settings.devices.speaker = "null"
    settings.conversation.turn_patience = 5
    settings.conversation.record = True
    overrides = LaunchOverrides(camera="clip.avi", mic="talk.wav", model_dir=tmp_path,
                                quant="int8", device="cpu")
    options = build_options(settings, _persona(), overrides, camera_on=True)
    assert options.model.local_dir == tmp_path
    assert options.quant is Quant.INT8
    assert options.mic == "talk.wav" and options.camera == "clip.avi"
    assert options.speaker == "null"
    assert options.backend_options == {"device": "cpu"}
    assert options.duplex.end_of_turn_silence == 2.0  # the most patient step's cap
    assert options.duplex.judge_after == pytest.approx(0.2)
    assert options.end_of_turn is not None and options.end_of_turn.threshold == 0.8
    assert options.record_dir == settings.recordings_dir()
    assert options.loop_files  # files replayed for a demo keep going


def test_settings_devices_and_camera_off():
    settings = Settings()
    settings.model.local_dir = "/m"
    settings.devices.mic = "2"
    options = build_options(settings, _persona(), LaunchOverrides(model_dir=Path("m")),
                            camera_on=False)
    assert options.camera is None
    assert options.standby_camera == 0  # what switching it on mid-conversation opens
    assert options.mic == 2 and options.speaker is None
    assert options.record_dir is None and not options.loop_files
    assert options.backend_options == {}
    on = build_options(settings, _persona(), LaunchOverrides(), camera_on=True)
    assert on.camera == 0


def test_persona_becomes_the_sessions_persona():
    settings = Settings()
    settings.model.local_dir = "/m"
    persona = _persona("language-tutor")
    options = build_options(settings, persona, LaunchOverrides(), camera_on=False)
    assert options.persona.role_prompt == persona.role_prompt
    assert options.persona.language == "es"
    assert options.persona.voice.builtin == persona.builtin_voice


def test_no_model_chosen_says_what_to_do():
    with pytest.raises(BackendError, match="no model"):
        build_options(Settings(), _persona(), LaunchOverrides(), camera_on=False)
    settings = Settings()
    settings.model.model_id = "qwen2.5-omni-3b"  # known, but not downloaded
    with pytest.raises(BackendError, match="not downloaded"):
        build_options(settings, _persona(), LaunchOverrides(), camera_on=False)


def test_self_check_folders_are_recognised(tmp_path):
    assert not is_self_check(tmp_path)
    assert not is_self_check(None)
    (tmp_path / "duetto.json").write_text(json.dumps({"tiny": True}))
    assert is_self_check(tmp_path)
    assert not is_self_check(Path(tmp_path / "missing"))


def test_with_the_end_of_turn_model_off_the_patience_steps_silence_decides():
    settings = Settings()
    settings.conversation.end_of_turn_model = False
    settings.conversation.turn_patience = 4
    options = build_options(settings, _persona(), LaunchOverrides(model_dir=Path("m")),
                            camera_on=False)
    assert options.duplex.judge_after is None and options.end_of_turn is None
    assert options.duplex.end_of_turn_silence == 0.9


def test_default_settings_keep_the_old_silence_as_the_models_fallback():
    options = build_options(Settings(), _persona(), LaunchOverrides(model_dir=Path("m")),
                            camera_on=False)
    assert options.end_of_turn is not None
    assert options.end_of_turn.threshold == 0.5 and options.end_of_turn.silence == 0.6
    assert options.duplex.end_of_turn_silence == 1.2


def test_the_family_is_read_from_the_model_folder(moshi_tiny_factory, tmp_path):
    """A Moshi folder with Qwen chosen in Settings loads as Moshi: the folder says so."""
    settings = Settings()
    assert settings.model.family == "qwen2.5-omni"
    folder = moshi_tiny_factory()
    options = build_options(settings, _persona(), LaunchOverrides(model_dir=folder),
                            camera_on=False)
    assert options.family == "moshi"
    settings.model.local_dir = str(folder)  # the same folder chosen in Settings → Model
    assert build_options(settings, _persona(), LaunchOverrides(),
                         camera_on=False).family == "moshi"
    # --family wins over the folder; a folder that says nothing keeps Settings' family.
    forced = build_options(settings, _persona(), LaunchOverrides(model_dir=folder,
                                                                 family="qwen2.5-omni"),
                           camera_on=False)
    assert forced.family == "qwen2.5-omni"
    blank = build_options(Settings(), _persona(), LaunchOverrides(model_dir=tmp_path),
                          camera_on=False)
    assert blank.family == "qwen2.5-omni"
    with pytest.raises(BackendError, match="unknown model family"):
        build_options(settings, _persona(), LaunchOverrides(family="llama"), camera_on=False)
