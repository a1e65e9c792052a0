"""Starting from the terminal: wrong paths said at once, no display said plainly, Ctrl+C
ends the app cleanly. Each runs `python -m app` in a child process, as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.ui.display import NO_DISPLAY, display_problem

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(DUETTO_CONFIG_DIR=str(tmp_path / "config"), DUETTO_DATA_DIR=str(tmp_path / "data"),
               DUETTO_MODELS_DIR=str(tmp_path / "models"), PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def test_a_missing_mic_file_is_said_before_anything_loads(tmp_path):
    """Before: the window opened, loaded the model (about 15 s), then said it."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "app", "--model", str(tmp_path), "--mic",
         str(tmp_path / "talk.wav"), "--speaker", "null", "--start"],
        env=_env(tmp_path, QT_QPA_PLATFORM="offscreen"), cwd=ROOT, capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert (f"The microphone input cannot be used: file not found: {tmp_path / 'talk.wav'}"
            in done.stderr)
    assert "Check the path given to --mic" in done.stderr and "Traceback" not in done.stderr
    print(f"said after {time.monotonic() - started:.1f} s")


def test_without_a_display_the_terminal_says_what_to_do(tmp_path):
    """Before: Qt aborted with 'xcb-cursor0 is needed', though it was installed."""
    done = subprocess.run([sys.executable, "-m", "app"], env=_env(tmp_path), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"duetto: {NO_DISPLAY}"
    assert "xcb" not in done.stderr


@pytest.mark.parametrize(("env", "platform", "problem"), [
    ({}, "linux", True),
    ({"DISPLAY": ":0"}, "linux", False),
    ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", False),
    ({"QT_QPA_PLATFORM": "offscreen"}, "linux", False),
    ({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
    ({"QT_QPA_PLATFORM": "wayland"}, "linux", True),
    ({}, "win32", False),
    ({}, "darwin", False),
])
def test_display_problem(env, platform, problem):
    assert (display_problem(env, platform) is not None) is problem


FIRST_RUN_SAYS_WHEN_OPEN = textwrap.dedent("""
    import sys
    from app.ui import first_run
    shown = first_run.FirstRunDialog.exec
    def exec_and_say(self):
        print("dialog open", flush=True)  # the test acts now
        return shown(self)
    first_run.FirstRunDialog.exec = exec_and_say
    from app.__main__ import main
    sys.exit(main([]))
""")


def _first_instance(tmp_path: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", FIRST_RUN_SAYS_WHEN_OPEN], cwd=ROOT,
                             text=True, env=_env(tmp_path, QT_QPA_PLATFORM="offscreen"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.readline().strip() == "dialog open"
    return child


def _end(child: subprocess.Popen) -> tuple[str, str]:
    try:
        return child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def test_ctrl_c_ends_the_app_cleanly(tmp_path):
    """Ctrl+C while the first-run dialog waits: the app closes and exits 130, without a
    KeyboardInterrupt traceback. Before: a traceback, and the app kept running."""
    child = _first_instance(tmp_path)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    _out, err = _end(child)
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err
    assert child.returncode == 130


def test_a_second_instance_says_the_first_runs_and_leaves(tmp_path):
    """Two at once wrote one recording folder and one settings file; nothing warned."""
    first = _first_instance(tmp_path)
    try:
        second = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, text=True,
                                env=_env(tmp_path, QT_QPA_PLATFORM="offscreen"),
                                capture_output=True, timeout=120)
    finally:
        first.send_signal(signal.SIGINT)
        _end(first)
    assert second.returncode == 1
    assert f"Duetto is already running (process {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
