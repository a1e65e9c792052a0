"""Start the desktop app: one QApplication, the main window, the event loop."""

from __future__ import annotations

import argparse
import sys

from PySide6.QtWidgets import QApplication

from app.ui.main_window import MainWindow


def launch(args: argparse.Namespace | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Duetto")
    app.setOrganizationName("Duetto")
    window = MainWindow()
    window.show()
    return app.exec()
