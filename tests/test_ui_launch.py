"""Launching: the command line's app options, and the whole app end to end from files
with a tiny model (the hardware self-check), closing with no thread left behind."""

from __future__ import annotations

import threading
from pathlib import Path

import media
import numpy as np
import pytest
import soundfile as sf
import tiny_models

from app import __main__ as cli
from app.ui.launch import overrides_from_args
from app.ui.main_window import MainWindow
from app.ui.options import LaunchOverrides

qwen_tiny_factory = tiny_models.qwen_tiny_factory


def test_app_options_parse_and_subcommands_still_dispatch():
    args = cli.build_parser().parse_args(
        ["--camera", "clip.avi", "--mic", "talk.wav", "--speaker", "null", "--model", "/m",
         "--quant", "int8", "--persona", "storyteller"])
    assert args.command is None
    overrides = overrides_from_args(args)
    assert overrides == LaunchOverrides(camera="clip.avi", mic="talk.wav", speaker="null",
                                        model_dir=Path("/m"), quant="int8",
                                        persona="storyteller")
    assert overrides.from_files
    sub = cli.build_parser().parse_args(["models", "tiny", "qwen2.5-omni", "/x", "--seed", "1"])
    assert sub.command == "models" and sub._rest == ["tiny", "qwen2.5-omni", "/x", "--seed", "1"]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--quant", "int3"])


def test_main_window_opens_and_closes(qtbot):
    window = MainWindow(detect_hardware=None)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle() == "Duetto"
    assert window.status_model.text() == "Model: no model"
    window.close()
    assert not window.isVisible()


def _new_threads(before: set[threading.Thread]) -> list[str]:
    # tqdm's monitor is a library-wide daemon that transformers' loading bar starts once.
    return [t.name for t in threading.enumerate()
            if t.is_alive() and t not in before and t.name != "tqdm_monitor"]


@pytest.mark.slow
def test_self_check_runs_end_to_end_from_files_and_closes_cleanly(qtbot, qwen_tiny_factory,
                                                                   tmp_path):
    folder = qwen_tiny_factory()
    before = set(threading.enumerate())
    video = media.write_video(tmp_path / "cam.avi", 60, fps=20, width=64, height=48)
    rng = np.random.default_rng(0)
    speech_like = np.concatenate([np.zeros(8000), 0.3 * rng.standard_normal(16000)])
    sf.write(str(tmp_path / "mic.wav"), speech_like.astype(np.float32), 16000)
    window = MainWindow(
        LaunchOverrides(camera=str(video), mic=str(tmp_path / "mic.wav"), speaker="null",
                        model_dir=folder, quant="bf16", device="cpu"),
        detect_hardware=None,
    )
    qtbot.addWidget(window)
    window.show()
    window.start_conversation()
    assert window.stage.badge.isVisibleTo(window)  # labelled as a self-check
    assert "(self-check)" in window.status_model.text()
    qtbot.waitUntil(lambda: window.controller.phase == "running", timeout=60000)
    qtbot.waitUntil(lambda: window.stage.frames_shown > 3, timeout=10000)
    qtbot.waitUntil(lambda: window.side.mic_meter.level_db > -40, timeout=10000)
    assert window.stage.pill.state in ("listening", "responding", "speaking", "interrupted")
    assert window.controller.backend_spec.voices  # the real backend reported its voices
    assert not [t for t in window.messages.texts() if "could not start" in t]
    window.close()
    assert _new_threads(before) == []


def test_family_on_the_command_line():
    args = cli.build_parser().parse_args(["--model", "/m", "--family", "moshi"])
    assert overrides_from_args(args).family == "moshi"
    from app.model import families

    assert list(cli.FAMILIES) == families.known()  # the parser's copy of the list


def test_quit_after_closes_the_app_by_itself_with_exit_0(tmp_path):
    """A scripted run (the installer's smoke test) ends as the close button ends it."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DUETTO_CONFIG_DIR=str(tmp_path / "c"),
               DUETTO_DATA_DIR=str(tmp_path / "d"), DUETTO_MODELS_DIR=str(tmp_path / "m"))
    done = subprocess.run([sys.executable, "-m", "app", "--quit-after", "1"], env=env,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
