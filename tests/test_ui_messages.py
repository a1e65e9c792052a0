"""Fault messages: what happened, what still works, what to do; never a raw exception
class name (the banners of a machine without a sound card showed "PortAudioError")."""

from __future__ import annotations

import errno
import re

import pytest
import test_ui_fakes as fakes

from app.capture.base import CaptureError
from app.capture.portaudio import AudioUnavailable
from app.model.contract import BackendError
from app.ui import messages
from app.ui.main_window import MainWindow
from app.ui.options import LaunchOverrides


class PortAudioError(Exception):
    """Stands in for sounddevice.PortAudioError (same name and arguments)."""


FAULTS = [
    PortAudioError("Error querying device -1", -9996),
    PortAudioError("Error opening OutputStream: Device unavailable", -9985),
    CaptureError("camera #0 could not be opened (not connected, or in use?)"),
    AudioUnavailable("PortAudio is not installed (libportaudio.so.2: cannot open)"),
    PermissionError(errno.EACCES, "Permission denied", "/data/recordings/x"),
    OSError(errno.EROFS, "Read-only file system", "/data/recordings"),
    OSError(errno.ENOSPC, "No space left on device", "/data/recordings/a.wav"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/m/talk.wav"),
    MemoryError(),
    RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"),
    BackendError("the folder has no config.json", hint="pick a model folder"),
    ValueError("something odd"),
]


_NAMES = {type(e).__name__ for e in FAULTS} | {"OSError", "CaptureError", "Exception"}
RAW_NAMES = re.compile(rf"\b({'|'.join(_NAMES)})\b")


@pytest.mark.parametrize("exc", FAULTS, ids=lambda e: type(e).__name__)
def test_every_start_failure_says_three_things_without_class_names(exc):
    message = messages.start_failed(exc)
    assert message.level == messages.ERROR
    assert message.happened and message.still_works and message.to_do
    text = message.text()
    assert not RAW_NAMES.search(text), text
    assert text.count(". ") >= 2  # three sentences


def test_no_sound_device_is_said_plainly():
    fault = messages.describe(PortAudioError("Error querying device -1", -9996))
    assert "no sound device" in fault.happened
    assert "self-check" in fault.still_works


def test_device_losses_say_what_goes_on():
    camera = messages.device_lost("camera", "no frame for 2 s").text()
    assert camera.startswith("The camera stopped working: no frame for 2 s.")
    assert "goes on without it" in camera
    mic = messages.device_lost("talk.wav", "the file is damaged").text()
    assert mic.startswith("The microphone stopped working")
    assert "taken back" in mic  # a lost device comes back by itself (device_keeper.py)


def test_a_device_back_and_a_stalled_model_are_said():
    back = messages.device_back("microphone", "The microphone is back after 4 s away")
    assert back.level == messages.INFO
    assert back.text() == ("The microphone is back after 4 s away. The conversation has it "
                           "again.")
    stalled = messages.model_notice("stalled", 3.0)
    assert stalled is not None and stalled.level == messages.WARNING
    assert stalled.text().startswith("The model has made no sound for 3 s while answering")
    assert "Stop talking" in stalled.text()
    resumed = messages.model_notice("resumed", 3.0)
    assert resumed is not None and resumed.level == messages.INFO
    assert messages.model_notice("something else", 1.0) is None


def test_the_window_never_shows_a_raw_exception_name(qtbot, tmp_path):
    harness = fakes.Harness()
    window = MainWindow(LaunchOverrides(model_dir=tmp_path), controller=harness.controller,
                        detect_hardware=None)
    qtbot.addWidget(window)
    harness.fail_with = PortAudioError("Error querying device -1", -9996)
    window.start_conversation()
    qtbot.waitUntil(lambda: bool(window.messages.texts()), timeout=5000)
    text = window.messages.texts()[-1]
    assert "PortAudioError" not in text and "no sound device" in text
    window.close()
