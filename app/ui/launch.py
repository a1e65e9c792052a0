"""Start the desktop app: check what can be checked without Qt (the files named on the
command line, a display to show the window on), then one QApplication, the theme, the
main window and the first run; Ctrl+C in the terminal closes it like its close button."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.instance_lock import AlreadyRunning, InstanceLock, acquire_instance_lock
from app.ui import inputs, theme
from app.ui.display import display_problem
from app.ui.interrupt import end_on_ctrl_c

if TYPE_CHECKING:
    from app.ui.options import LaunchOverrides

INTERRUPTED = 130  # the shell's code for a program ended by Ctrl+C (128 + SIGINT)


def _model_dir(args: argparse.Namespace | None) -> Path | None:
    model = getattr(args, "model", None)
    return Path(model).expanduser() if model else None


def overrides_from_args(args: argparse.Namespace | None) -> LaunchOverrides:
    from app.ui.options import LaunchOverrides  # with the conversation code: seconds

    if args is None:
        return LaunchOverrides()
    return LaunchOverrides(
        camera=getattr(args, "camera", None),
        mic=getattr(args, "mic", None),
        speaker=getattr(args, "speaker", None),
        model_dir=_model_dir(args),
        quant=getattr(args, "quant", None),
        device=getattr(args, "device", None),
        persona=getattr(args, "persona", None),
        family=getattr(args, "family", None),
    )


def create_app() -> QApplication:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Duetto")
    app.setOrganizationName("Duetto")
    theme.apply(app)
    return app


def launch(args: argparse.Namespace | None = None) -> int:
    # Before Qt and before any model: a wrong path is said at once, in the terminal.
    problems = inputs.launch_problems(getattr(args, "mic", None), getattr(args, "camera", None),
                                      _model_dir(args))
    for problem in problems:
        print(f"duetto: {problem.text()}", file=sys.stderr)
    if problems:
        return 2
    no_screen = display_problem()
    if no_screen:
        print(f"duetto: {no_screen}", file=sys.stderr)
        return 1
    try:  # one Duetto at a time: two would write over each other's settings and recordings
        lock = acquire_instance_lock()
    except AlreadyRunning as exc:
        print(f"duetto: {exc}", file=sys.stderr)
        _tell_in_a_box("Duetto is already running", str(exc))
        return 1
    try:
        return _run_window(args, lock)
    finally:
        lock.release()


def _tell_in_a_box(title: str, text: str) -> None:
    """Say it in a window too, for a Duetto started from a desktop menu (no terminal);
    not where no one can see a window (offscreen, as in tests and benchmarks)."""
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal")):
        return
    create_app()
    QMessageBox.warning(None, title, text)


def _run_window(args: argparse.Namespace | None, lock: InstanceLock) -> int:
    from app.ui.main_window import MainWindow  # the model and capture code: seconds

    app = create_app()
    window = MainWindow(overrides_from_args(args))
    if lock.note:  # the lock could not be enforced here: say so, and go on
        window.post("warning", lock.note)

    def interrupted() -> None:
        QApplication.closeAllWindows()  # the main window stops its conversation and model
        app.exit(INTERRUPTED)

    end_on_ctrl_c(app, interrupted)
    window.show()
    quit_after = getattr(args, "quit_after", None)
    if quit_after is not None:
        # As the close button: the conversation ends and its recording is finalized.
        QTimer.singleShot(int(quit_after * 1000), QApplication.closeAllWindows)
    if getattr(args, "start", False):
        QTimer.singleShot(0, window.start_conversation)
    elif window.needs_first_run():
        QTimer.singleShot(0, window.open_first_run)
    return app.exec()
