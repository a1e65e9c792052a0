"""Live subtitles: the assistant's words as they are produced, the last two lines shown
over the video on a dark band; a new answer starts a fresh line."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QLabel, QWidget

MAX_CHARS = 220  # about two lines at the preview's width


class Subtitles(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._response = None
        self.full_text = ""
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom)
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() + 4)
        font.setWeight(QFont.Weight.DemiBold)
        self.setFont(font)
        self.setStyleSheet(
            "QLabel { background: rgba(8,10,14,185); color: #f5f6fa; border-radius: 10px;"
            " padding: 10px 16px; }"
        )
        self.hide()

    def add(self, text: str, response: int) -> None:
        if response != self._response:
            self._response = response
            self.full_text = ""
        self.full_text += text
        self._show_tail()

    def mark_heard(self, heard: str) -> None:
        """After a barge-in: show only what was actually played, marked as cut off."""
        self.full_text = (heard.rstrip() + " —") if heard.strip() else ""
        self._show_tail()

    def clear_text(self) -> None:
        self._response = None
        self.full_text = ""
        self.setText("")
        self.hide()

    def _show_tail(self) -> None:
        text = " ".join(self.full_text.split())
        if len(text) > MAX_CHARS:
            cut = text[-MAX_CHARS:]
            space = cut.find(" ")
            text = "…" + (cut[space + 1:] if 0 <= space < 40 else cut)
        self.setText(text)
        self.setVisible(bool(text))
