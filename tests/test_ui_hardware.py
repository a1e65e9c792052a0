"""Finding the GPU: quick without a driver, and said before the model code is imported."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from app.ui import hardware
from app.ui.hardware_probe import HardwareProbe


def test_no_driver_is_decided_without_torch(tmp_path):
    """This machine has no GPU driver: detect() says so without importing torch, which
    took 5-30 s on a cold start. (Run in a fresh interpreter: tests import torch.)"""
    if hardware.no_driver_reason() is None:
        pytest.skip("this machine has a GPU driver: torch must be asked")
    code = ("import sys; from app.ui import hardware; h = hardware.detect(); "
            "print(len(h.gpus), 'torch' in sys.modules, h.note)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split(" ", 2)
    assert out[:2] == ["0", "False"], out
    assert "no NVIDIA GPU driver" in out[2]


def test_driver_signs_per_platform(tmp_path):
    sign = tmp_path / "nvidiactl"
    assert hardware.no_driver_reason("linux", (str(sign),)) is not None
    sign.touch()
    assert hardware.no_driver_reason("linux", (str(sign),)) is None  # torch must tell
    assert "Mac" in hardware.no_driver_reason("darwin")


def test_the_gpu_is_reported_before_the_family_specs(qtbot, monkeypatch):
    """The first-run dialog waits for the GPU answer; the voices (which import the model
    code, 15 s on a cold start) must not hold it back."""
    release = threading.Event()

    def slow_spec(family):
        release.wait(10)
        return None

    monkeypatch.setattr(hardware, "family_spec", slow_spec)
    probe = HardwareProbe(lambda: hardware.Hardware((), "no GPU (test)"))
    found, specs = [], []
    probe.found.connect(found.append)
    probe.specs_ready.connect(specs.append)
    probe.start(["qwen2.5-omni"])
    qtbot.waitUntil(lambda: bool(found), timeout=3000)
    assert found[0].note == "no GPU (test)" and not specs
    release.set()
    qtbot.waitUntil(lambda: bool(specs), timeout=3000)
    probe.join(5)


def test_a_dialog_opened_just_after_the_answer_still_gets_it(qtbot, monkeypatch):
    """The GPU answer is now instant on a machine without a driver: it could be emitted
    after the first-run dialog was made but before it was connected, and the dialog said
    "Looking for a GPU…" for good."""
    from app.ui import first_run
    from app.ui.main_window import MainWindow

    seen = {}

    def look(dialog):
        qtbot.wait(100)  # the queued answers arrive
        seen["note"] = dialog.gpu_note.text()
        seen["primary"] = dialog.selfcheck_button.isDefault()
        return 0

    monkeypatch.setattr(hardware, "family_spec", lambda family: None)
    monkeypatch.setattr(first_run.FirstRunDialog, "exec", look)
    window = MainWindow(detect_hardware=lambda: hardware.Hardware((), "no GPU (test)"))
    qtbot.addWidget(window)
    window.probe.join(5)  # answered and emitted; the window has not seen it yet
    assert window.hardware is None
    window.open_first_run()
    assert seen == {"note": seen["note"], "primary": True}
    assert "No GPU here" in seen["note"]
    window.close()
