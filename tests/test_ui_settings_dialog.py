"""The settings dialog's pages: values round-trip, the VRAM estimate warns, devices and
recordings fail with a sentence on a machine without them, first run offers what fits."""

from __future__ import annotations

import threading

import pytest
from test_ui_fakes import SPEC

from app.capture import devices
from app.config import personas as persona_store
from app.config.settings import Settings
from app.model import memory_plan, registry
from app.model.contract import Quant
from app.ui import audio_tools, hardware
from app.ui.first_run import FirstRunDialog, best_quant
from app.ui.settings_dialog import PAGES, SettingsDialog

NO_GPU = hardware.Hardware((), "no CUDA GPU found")
GPU_24 = hardware.Hardware((hardware.GpuInfo("Test GPU", 24.0, 23.0),), "")
GPU_12 = hardware.Hardware((hardware.GpuInfo("Small GPU", 12.0, 11.0),), "")
GPU_80 = hardware.Hardware((hardware.GpuInfo("Big GPU", 80.0, 79.0),), "")


@pytest.fixture(autouse=True)
def _no_devices(monkeypatch):
    """Listing devices is quick and empty, as on a machine without any."""
    monkeypatch.setattr(devices, "list_audio_devices",
                        lambda: devices.AudioDevices((), (), "no sound card (test)"))
    monkeypatch.setattr(devices, "list_cameras",
                        lambda **_: devices.CameraList((), "no camera (test)"))


def _dialog(qtbot, settings=None, found=NO_GPU, spec=SPEC) -> SettingsDialog:
    dialog = SettingsDialog(settings or Settings(), persona_store.load_all(), found,
                            {"qwen2.5-omni": spec}, None, confirm=False)
    qtbot.addWidget(dialog)
    return dialog


def test_every_page_is_there_and_unchanged_settings_round_trip(qtbot):
    settings = Settings()
    settings.model.model_id = "qwen2.5-omni-7b"
    settings.conversation.barge_in_min_speech = 0.3
    dialog = _dialog(qtbot, settings)
    assert dialog.stack.count() == len(PAGES) == 4
    for page in PAGES:
        dialog.show_page(page)
    assert dialog.result_settings() == settings
    dialog.reject()


def test_conversation_and_device_changes_reach_the_result(qtbot):
    dialog = _dialog(qtbot)
    page = dialog.conversation
    page.patience.setValue(5)
    page.turn_model.setChecked(False)
    page.sensitivity.setValue(10)
    page.echo.setChecked(False)
    page.push_to_talk.setChecked(True)
    page.record.setChecked(True)
    dialog.devices.mic.setEditText("/tmp/talk.wav")
    dialog.devices.camera_on.setChecked(False)
    result = dialog.result_settings()
    assert result.conversation.turn_patience == 5
    assert not result.conversation.end_of_turn_model
    assert result.conversation.barge_in_min_speech == pytest.approx(0.1)
    assert not result.conversation.echo_cancellation and result.conversation.push_to_talk
    assert result.conversation.record
    assert result.devices.mic == "/tmp/talk.wav" and not result.devices.camera_on
    qtbot.waitUntil(lambda: "No microphone" in dialog.devices.mic_note.text(), timeout=3000)
    dialog.reject()


def test_vram_estimate_comes_from_the_registry_and_warns(qtbot):
    settings = Settings()
    settings.model.model_id = "qwen2.5-omni-7b"
    settings.model.quant = "bf16"
    dialog = _dialog(qtbot, settings, found=GPU_12)
    page = dialog.model
    # The figure is the memory plan's, at the shortest context it could run with.
    shortest = memory_plan.plan_entry("qwen2.5-omni-7b", Quant.BF16,
                                      memory_plan.QWEN_MIN_CONTEXT)
    assert page.will_not_fit()
    assert f"{shortest.total_gib:.1f} GiB" in page.fit_note.text()
    assert "NOT fit" in page.fit_note.text()
    page.quant.setCurrentIndex(page.quant.findData("nf4"))
    assert not page.will_not_fit()
    assert "fits" in page.fit_note.text() and "tokens" in page.fit_note.text()
    page.device.setCurrentIndex(page.device.findData("cpu"))
    page.quant.setCurrentIndex(page.quant.findData("bf16"))
    assert not page.will_not_fit()  # the CPU has no VRAM to run out of
    assert "Small GPU" in page.gpu_note.text()
    dialog.reject()


def test_without_a_gpu_the_model_page_says_so(qtbot):
    dialog = _dialog(qtbot, found=NO_GPU)
    assert "No GPU" in dialog.model.gpu_note.text()
    assert "self-check" in dialog.model.gpu_note.text()
    dialog.reject()


def test_folder_source_and_quant_reach_the_result(qtbot, tmp_path):
    dialog = _dialog(qtbot)
    page = dialog.model
    page.folder_radio.setChecked(True)
    page.folder.setText(str(tmp_path))
    page.quant.setCurrentIndex(page.quant.findData("int8"))
    result = dialog.result_settings()
    assert result.model.local_dir == str(tmp_path) and result.model.quant == "int8"
    dialog.reject()


def test_the_dialog_lists_the_models_voices(qtbot):
    dialog = _dialog(qtbot)
    page = dialog.personas
    voices = [page.voice_combo.itemData(i) for i in range(page.voice_combo.count())]
    assert voices == ["", "Chelsie", "Ethan"]
    assert "Chelsie, Ethan" in page.voice_note.text()
    assert "cannot speak with a reference" in page.voice_note.text()
    dialog.reject()


def test_a_new_persona_is_saved_and_chosen(qtbot):
    dialog = _dialog(qtbot)
    page = dialog.personas
    page.new_persona()
    page.name.setText("Chess coach")
    page.prompt.setPlainText("You are a chess coach watching the board through the camera.")
    page.voice_combo.setCurrentIndex(page.voice_combo.findData("Ethan"))
    page.use_current()
    assert dialog.personas_changed
    assert dialog.result_settings().persona == "chess-coach"
    stored = persona_store.load_all().get("chess-coach")
    assert stored.builtin_voice == "Ethan" and not stored.preset
    page.delete()
    assert persona_store.load_all().get("chess-coach") is None
    assert dialog.result_settings().persona == "friendly-assistant"
    dialog.reject()


def test_an_invalid_persona_is_not_saved_and_says_why(qtbot):
    dialog = _dialog(qtbot)
    page = dialog.personas
    page.new_persona()
    page.name.setText("")
    assert page.save_current() is None
    assert "name" in page.status.text()
    dialog.reject()


def test_recording_without_a_microphone_gives_a_clear_message(qtbot):
    dialog = _dialog(qtbot)
    page = dialog.personas
    page.reference_radio.setChecked(True)
    page.record()
    qtbot.waitUntil(lambda: "microphone" in page.status.text(), timeout=5000)
    assert "no microphone found" in page.status.text().lower()
    assert page.record_button.isEnabled()
    dialog.reject()
    assert not any(t.running for t in dialog.tasks.tasks)


def test_audio_tools_fail_with_sentences(tmp_path):
    cancel = threading.Event()
    with pytest.raises(audio_tools.AudioToolError, match="no microphone"):
        audio_tools.record_reference(tmp_path / "v.wav", lambda *_: None, cancel)
    with pytest.raises(audio_tools.AudioToolError, match="no speaker"):
        audio_tools.play_tone(lambda *_: None, cancel)
    with pytest.raises(audio_tools.AudioToolError, match="null"):
        audio_tools.play_tone(lambda *_: None, cancel, device="null")
    with pytest.raises(audio_tools.AudioToolError, match="cannot be read"):
        audio_tools.play_file(tmp_path / "missing.wav", lambda *_: None, cancel)


def test_microphone_test_meters_an_audio_file(qtbot, tmp_path):
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "loud.wav"
    sf.write(str(wav), 0.5 * np.ones(16000, np.float32), 16000)
    dialog = _dialog(qtbot)
    page = dialog.devices
    page.mic.setEditText(str(wav))
    page.mic_test.setChecked(True)
    qtbot.waitUntil(lambda: page.mic_meter.level_db > -10, timeout=3000)
    dialog.reject()
    assert page._mic_source is None


def test_camera_preview_of_a_missing_device_says_why(qtbot):
    dialog = _dialog(qtbot)
    page = dialog.devices
    page.camera.setEditText("/nonexistent/clip.avi")
    page.camera_test.setChecked(True)
    assert "could not start" in page.camera_note.text()
    assert not page.camera_test.isChecked()
    dialog.reject()


def test_first_run_offers_cpu_and_self_check_without_a_gpu(qtbot):
    dialog = FirstRunDialog(NO_GPU)
    qtbot.addWidget(dialog)
    assert "No GPU" in dialog.gpu_note.text()
    assert not dialog.cpu_button.isHidden() and not dialog.selfcheck_button.isHidden()
    dialog.selfcheck_button.click()
    assert dialog.choice.self_check and dialog.choice.device == "cpu"
    settings = Settings()
    dialog.choice.apply(settings)
    assert settings.model.device == "cpu"


def test_first_run_without_a_gpu_puts_the_self_check_first(qtbot):
    """No GPU: no GPU model is preselected and the self-check, not "Use this model", is
    the primary (default) button. While the GPU is looked for, nothing is preselected."""
    looking = FirstRunDialog(None)
    qtbot.addWidget(looking)
    assert looking.gpu_note.text() == "Looking for a GPU…"
    assert looking.models.currentItem() is None and not looking.use_button.isEnabled()
    looking.set_hardware(NO_GPU)
    for dialog in (looking, FirstRunDialog(NO_GPU)):
        qtbot.addWidget(dialog)
        assert dialog.models.currentItem() is None
        assert not dialog.use_button.isEnabled()
        assert dialog.selfcheck_button.objectName() == "primary"
        assert dialog.selfcheck_button.isDefault() and not dialog.use_button.isDefault()
        assert dialog.use_button.objectName() != "primary"
        dialog.models.setCurrentRow(0)  # the user may still pick one on purpose
        assert dialog.use_button.isEnabled()


def test_first_run_marks_what_fits_the_gpu(qtbot):
    dialog = FirstRunDialog(GPU_12)
    qtbot.addWidget(dialog)
    assert dialog.cpu_button.isHidden()
    assert dialog.use_button.objectName() == "primary" and dialog.use_button.isDefault()
    texts = [dialog.models.item(i).text() for i in range(dialog.models.count())]
    assert any(t.startswith("✓") and "3b" in t for t in texts)
    dialog.use_button.click()
    choice = dialog.choice
    assert choice.model_id and choice.open_model_page
    fit = hardware.fit(registry.get(choice.model_id), Quant(choice.quant), GPU_12)
    assert fit.fits
    big = registry.get("qwen2.5-omni-7b")
    assert best_quant(big, GPU_80) is Quant.BF16
    assert best_quant(big, GPU_12) is Quant.NF4


def test_camera_preview_of_a_video_file_shows_frames(qtbot, tmp_path):
    import media

    video = media.write_video(tmp_path / "clip.avi", 40, fps=20)
    dialog = _dialog(qtbot)
    page = dialog.devices
    page.camera.setEditText(str(video))
    page.camera_test.setChecked(True)
    qtbot.waitUntil(lambda: page.camera_view.frames_shown > 2, timeout=5000)
    dialog.reject()
    assert page._camera_source is None


def test_self_check_button_builds_a_tiny_model_and_selects_it(qtbot, monkeypatch, tmp_path):
    import json

    import app.model.tiny as tiny

    def fake_build(family, folder, **_):
        folder.mkdir(parents=True)
        (folder / "duetto.json").write_text(json.dumps({"tiny": True}))
        return folder

    monkeypatch.setattr(tiny, "build_tiny", fake_build)
    dialog = _dialog(qtbot, found=NO_GPU)
    page = dialog.model
    page.build_self_check()
    qtbot.waitUntil(lambda: page.folder.text() != "", timeout=5000)
    result = dialog.result_settings()
    assert result.model.local_dir.endswith("self-check-qwen2.5-omni")
    assert result.model.device == "cpu" and result.model.quant == "bf16"
    assert "Self-check model" in page.fit_note.text()
    dialog.reject()


def test_a_long_download_error_is_shown_whole(qtbot):
    """Offline, the download error (with the command to fetch the model elsewhere) runs to
    four lines; it was cut after three, and at the dialog's smallest size after one."""
    settings = Settings()
    settings.model.model_id = "qwen2.5-omni-3b"
    dialog = _dialog(qtbot, settings)
    dialog.show()
    dialog.show_page("model")
    page = dialog.model
    page._download_finished(
        "cannot download qwen2.5-omni-3b (Qwen/Qwen2.5-Omni-3B): the Hub is not reachable "
        "(Name or service not known) (use a model folder you already have with `duetto "
        "--model DIR`; or, on a machine with network, run `hf download Qwen/Qwen2.5-Omni-3B "
        "--local-dir qwen2.5-omni-3b`, copy that folder to this machine and pass it with "
        "--model DIR)", "error")
    note = page.entry_note
    for size in (dialog.size(), dialog.minimumSize()):
        dialog.resize(size)
        qtbot.wait(100)
        assert note.height() >= note.heightForWidth(note.width()), size
        assert note.heightForWidth(note.width()) >= 3 * note.fontMetrics().height()
        assert note.height() <= note.heightForWidth(note.width()) + 8  # and no blank room
    dialog.reject()
