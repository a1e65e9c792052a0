"""The main window. For now it only says what Duetto is; the live view comes with the UI
issue (camera preview, state, subtitles, meters, controls)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMainWindow, QVBoxLayout, QWidget


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Duetto")
        self.resize(960, 640)
        body = QWidget(self)
        layout = QVBoxLayout(body)
        title = QLabel("Duetto", body)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        title.setStyleSheet("font-size: 28px; font-weight: 600;")
        hint = QLabel(
            "No conversation yet. Run `duetto doctor` to see what this machine offers.", body
        )
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addStretch(1)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addStretch(1)
        self.setCentralWidget(body)
        self.statusBar().showMessage("No model loaded")
