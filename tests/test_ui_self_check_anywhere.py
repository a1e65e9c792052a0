"""The first run on a machine without a sound card or camera: "Run the self-check" builds
the tiny model and the conversation runs to a spoken answer, with stand-ins for the
missing devices. Before: Start failed with "PortAudioError: Error querying device -1"."""

from __future__ import annotations

import shutil

import pytest
import tiny_models

from app.capture import devices
from app.ui import hardware
from app.ui.main_window import MainWindow

qwen_tiny_factory = tiny_models.qwen_tiny_factory


@pytest.mark.slow
def test_first_run_self_check_without_devices_reaches_a_spoken_answer(
        qtbot, qwen_tiny_factory, monkeypatch):
    import app.model.tiny as tiny
    from app.ui.first_run import FirstRunDialog
    from app.ui.settings_dialog import SettingsDialog

    # A machine with no sound card and no camera (this one has neither; said here so the
    # test means the same on a machine that has them).
    monkeypatch.setattr(devices, "list_audio_devices",
                        lambda: devices.AudioDevices((), (), "PortAudio found no audio "
                                                             "devices (test)"))
    monkeypatch.setattr(devices, "list_cameras",
                        lambda **_: devices.CameraList((), "no camera (test)"))
    built = qwen_tiny_factory(min_answer_tokens=24)
    monkeypatch.setattr(tiny, "build_tiny",  # the same tiny model, without building it again
                        lambda family, folder, **_: shutil.copytree(built, folder))

    def run_the_self_check(dialog):  # the user presses "Run the self-check"
        assert dialog.selfcheck_button.isDefault()
        dialog.selfcheck_button.click()
        return dialog.result()

    def accept_once_built(dialog):  # Settings → Model builds it; the user presses OK
        qtbot.waitUntil(lambda: dialog.model.folder.text() != "", timeout=30000)
        return 1

    monkeypatch.setattr(FirstRunDialog, "exec", run_the_self_check)
    monkeypatch.setattr(SettingsDialog, "exec", accept_once_built)
    window = MainWindow(detect_hardware=lambda: hardware.Hardware((), "no CUDA GPU (test)"))
    qtbot.addWidget(window)
    window.show()
    assert window.needs_first_run()
    qtbot.waitUntil(lambda: window.hardware is not None, timeout=10000)  # no GPU here
    window.open_first_run()
    assert window.settings.model.device == "cpu"
    window.start_conversation()
    qtbot.waitUntil(lambda: window.controller.phase == "running", timeout=90000)
    texts = " ".join(window.messages.texts())
    assert "could not start" not in texts and "PortAudio" not in texts
    assert "self-check uses stand-ins" in texts
    qtbot.waitUntil(lambda: window.stage.frames_shown > 3, timeout=20000)  # the video
    qtbot.waitUntil(lambda: window.side.mic_meter.level_db > -40, timeout=20000)  # the voice
    qtbot.waitUntil(lambda: window.stage.pill.state == "speaking", timeout=120000)
    window.close()
