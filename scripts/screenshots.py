#!/usr/bin/env python3
"""Screenshots of Duetto for review: a first run on this machine through "Run the
self-check" to a spoken answer (with stand-ins for any microphone, speaker or camera the
machine lacks), two stacked messages beside the side panel, the main window during a live
self-check conversation (15 s, from files, with a tiny random model) and each settings
page.

    .venv/bin/python scripts/screenshots.py [--out DIR] [--seconds 15] [--model DIR]

Runs under Xvfb (started here on :99 when there is no DISPLAY; Debian packages: xvfb,
the xcb libraries that .ci/run installs, espeak-ng and sox for the demo speech,
imagemagick for the whole-screen shot). User folders are redirected to a temp folder,
so your own settings are never touched. Writes PNGs and prints their paths.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_LINES = (
    "Hi Duetto, can you see me? I am in my kitchen and I want to cook something tonight.",
    "I have tomatoes, an onion and some pasta. What could I make with that?",
)


def start_xvfb() -> subprocess.Popen | None:
    """A private Xvfb on a free display number (Xvfb picks it and tells us)."""
    if os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        sys.exit("no DISPLAY and no Xvfb: install xvfb (Debian: apt-get install xvfb)")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1440x900x24",
         "-nolisten", "tcp"],
        pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        number = answer.readline().strip()
    if proc.poll() is not None or not number:
        sys.exit("Xvfb did not start")
    os.environ["DISPLAY"] = f":{number}"
    return proc


def demo_video(path: Path, seconds: float = 20.0, fps: int = 15) -> Path:
    """A calm synthetic scene: a lit wall, a table, a person who sways a little."""
    import cv2
    import numpy as np

    width, height = 960, 540
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    glow = np.exp(-((x - 0.7) ** 2 + (y - 0.25) ** 2) / 0.12)
    wall = np.stack([60 + 70 * glow + 20 * y, 80 + 80 * glow + 10 * y, 110 + 90 * glow],
                    axis=-1)  # BGR: a warm wall lit from a window on the right
    for i in range(int(seconds * fps)):
        frame = np.clip(wall, 0, 255).astype(np.uint8).copy()
        cv2.rectangle(frame, (0, 430), (width, height), (52, 74, 104), -1)  # the table
        cv2.rectangle(frame, (690, 160), (860, 330), (210, 225, 235), -1)  # the window
        cv2.rectangle(frame, (690, 160), (860, 330), (120, 130, 140), 6)
        sway = int(14 * math.sin(i / fps * 1.3))
        cx = width // 2 - 80 + sway
        cv2.ellipse(frame, (cx, 520), (170, 150), 0, 180, 360, (90, 60, 45), -1)  # shoulders
        cv2.rectangle(frame, (cx - 30, 330), (cx + 30, 390), (120, 150, 190), -1)  # neck
        cv2.ellipse(frame, (cx, 270), (78, 96), 0, 0, 360, (130, 165, 205), -1)  # face
        cv2.ellipse(frame, (cx, 215), (86, 60), 0, 180, 360, (35, 40, 55), -1)  # hair
        for dx in (-28, 28):
            cv2.circle(frame, (cx + dx, 270), 7, (40, 40, 50), -1)
        mouth = 6 + int(6 * abs(math.sin(i / fps * 7))) if (i // fps) % 4 < 2 else 3
        cv2.ellipse(frame, (cx, 318), (22, mouth), 0, 0, 180, (60, 60, 140), -1)
        cv2.circle(frame, (760, 455), 26, (40, 60, 200), -1)  # a tomato on the table
        cv2.circle(frame, (815, 462), 22, (40, 70, 210), -1)
        writer.write(cv2.GaussianBlur(frame, (3, 3), 0))
    writer.release()
    return path


def demo_speech(path: Path) -> Path:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        sys.exit("espeak-ng and sox make the demo speech: install them, or pass --mic FILE")
    parts = []
    for n, line in enumerate(DEMO_LINES):
        raw = path.with_name(f"line{n}.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), line],
                       check=True)
        parts.append(str(raw))
    subprocess.run(["sox", *parts, "-r", "16000", "-c", "1", str(path), "pad", "0.5", "4"],
                   check=True)
    return path


def first_run_self_check(model: Path, save, wait) -> None:
    """A new user on this machine: the first-run dialog, "Run the self-check" (its model
    built on the Model page), Start, and the conversation up to a spoken answer; then two
    stacked messages beside the side panel, at the usual and the smallest window size."""
    import shutil as _shutil

    from PySide6.QtWidgets import QApplication

    import app.model.tiny as tiny
    from app.ui.first_run import FirstRunDialog
    from app.ui.main_window import MainWindow
    from app.ui.settings_dialog import SettingsDialog

    # The self-check builds its tiny model into the models folder; the one built above is
    # copied there instead (the same model, and the script runs a minute shorter).
    tiny.build_tiny = lambda family, folder, **_: Path(_shutil.copytree(model, folder))
    window = MainWindow()
    window.show()
    done: list[str] = []

    def drive_dialogs() -> None:
        modal = QApplication.activeModalWidget()
        if isinstance(modal, FirstRunDialog) and "first" not in done:
            if modal.hardware is None:
                return  # still looking for a GPU
            done.append("first")
            save_screen("selfcheck-1-first-run", modal)
            modal.selfcheck_button.click()
        elif isinstance(modal, SettingsDialog) and "settings" not in done:
            if not modal.model.folder.text():
                return  # the self-check model is being built
            done.append("settings")
            save_screen("selfcheck-2-model-built", modal)
            modal.accept()

    def save_screen(name: str, widget) -> None:
        wait(300)
        save(widget, name)

    timer = QTimer()
    timer.timeout.connect(drive_dialogs)
    timer.start(200)
    window.open_first_run()  # modal dialogs, driven above as a user would click
    timer.stop()
    window.start_conversation()
    started = time.monotonic()
    while window.controller.phase != "running" and time.monotonic() - started < 120:
        wait(250)
    wait(1500)
    save(window, "selfcheck-3-running")
    spoken = False
    while time.monotonic() - started < 180:
        wait(200)
        if window.stage.pill.state == "speaking" and window.stage.subtitles.isVisible():
            save(window, "selfcheck-4-spoken-answer")  # at once: a tiny answer is short
            spoken = True
            break
    print(f"self-check: phase {window.controller.phase}, spoken answer {spoken}, "
          f"messages {window.messages.texts()}")
    window.controller.stop()
    while window.controller.phase != "idle" and time.monotonic() - started < 200:
        wait(250)
    from app.ui import messages

    window.messages.clear()
    window.report(messages.start_failed(PermissionError(
        13, "Permission denied", str(Path.home() / ".local/share/duetto/recordings"))))
    window.report(messages.device_lost("camera", "no frame for 2 s"))
    wait(300)
    save(window, "banners-two-stacked")
    window.resize(window.minimumSize())
    wait(500)
    save(window, "banners-two-stacked-smallest-window")
    window.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "duetto-screenshots")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--model", type=Path, help="a model folder (default: a tiny one)")
    parser.add_argument("--mic", type=Path, help="an audio file (default: espeak-ng speech)")
    args = parser.parse_args()

    xvfb = start_xvfb()
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    work = Path(tempfile.mkdtemp(prefix="duetto-shots-"))
    for name in ("CONFIG", "DATA", "MODELS"):
        os.environ[f"DUETTO_{name}_DIR"] = str(work / name.lower())
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(5)
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    model = args.model
    if model is None:
        from app.model.tiny import build_tiny

        model = build_tiny("qwen2.5-omni", work / "tiny", min_answer_tokens=24)
    video = demo_video(work / "camera.avi")
    mic = args.mic or demo_speech(work / "speech.wav")

    from app.ui.launch import create_app
    from app.ui.main_window import MainWindow
    from app.ui.options import LaunchOverrides

    qt_app = create_app()  # kept: the application must outlive the windows
    shots: list[Path] = []

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def save(widget, name: str) -> None:
        path = args.out / f"{name}.png"
        widget.grab().save(str(path))
        shots.append(path)
        if shutil.which("import"):
            whole = args.out / f"{name}-screen.png"
            subprocess.run(["import", "-window", "root", str(whole)], check=False)
            shots.append(whole)

    first_run_self_check(model, save, wait)

    window = MainWindow(LaunchOverrides(camera=str(video), mic=str(mic), speaker="null",
                                        model_dir=model, quant="bf16", device="cpu",
                                        persona="cooking-helper"))
    window.show()
    window.start_conversation()
    started = time.monotonic()
    best_subtitle = None
    while time.monotonic() - started < args.seconds:
        wait(250)
        if window.stage.subtitles.isVisible() and best_subtitle is None \
                and time.monotonic() - started > 6:
            best_subtitle = True
            save(window, "main-answering")
    save(window, "main")
    print(f"after {args.seconds:.0f} s: phase {window.controller.phase}, state "
          f"{window.stage.pill.state}, frames shown {window.stage.frames_shown}, "
          f"messages {window.messages.texts()}")
    window.controller.stop()
    for _ in range(40):
        if window.controller.phase == "idle":
            break
        wait(250)
    save(window, "main-idle")

    dialog = window.settings_dialog()
    dialog.show()
    for page in ("persona", "model", "devices", "conversation"):
        dialog.show_page(page)
        wait(1500 if page == "devices" else 400)
        save(dialog, f"settings-{page}")
    dialog.reject()
    window.close()
    qt_app.processEvents()
    for path in shots:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
