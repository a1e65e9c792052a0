"""Start the desktop app: one QApplication, the theme, the main window, first run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.ui import theme
from app.ui.main_window import MainWindow
from app.ui.options import LaunchOverrides


def overrides_from_args(args: argparse.Namespace | None) -> LaunchOverrides:
    if args is None:
        return LaunchOverrides()
    model = getattr(args, "model", None)
    return LaunchOverrides(
        camera=getattr(args, "camera", None),
        mic=getattr(args, "mic", None),
        speaker=getattr(args, "speaker", None),
        model_dir=Path(model).expanduser() if model else None,
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
    app = create_app()
    overrides = overrides_from_args(args)
    window = MainWindow(overrides)
    window.show()
    if getattr(args, "start", False):
        QTimer.singleShot(0, window.start_conversation)
    elif window.needs_first_run():
        QTimer.singleShot(0, window.open_first_run)
    return app.exec()
