"""Live subtitles: the assistant's words as they are produced, the last two lines shown
over the video on a dark band; a new answer starts a fresh line."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QLabel, QWidget

MAX_CHARS = 120  # about two lines at the preview's width
LONGEST_WORD = 28
ZERO_WIDTH_SPACE = "\u200b"


def breakable(text: str, longest: int = LONGEST_WORD) -> str:
    """Long runs without spaces get invisible break points, so word wrap can split them."""
    words = []
    for word in text.split(" "):
        if len(word) > longest:
            word = ZERO_WIDTH_SPACE.join(word[i:i + longest]
                                         for i in range(0, len(word), longest))
        words.append(word)
    return " ".join(words)


def tail(text: str, limit: int) -> str:
    """The last `limit` characters of `text`, cut at a word boundary where one is near."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    space = cut.find(" ")
    return "…" + (cut[space + 1:] if 0 <= space < 40 else cut)


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
        # After an answer, its words stay up a moment, then the video is clear again.
        self._fade = QTimer(self)
        self._fade.setSingleShot(True)
        self._fade.setInterval(4000)
        self._fade.timeout.connect(self.hide)

    def answer_finished(self) -> None:
        self._fade.start()

    def add(self, text: str, response: int) -> None:
        if self._response == -1 and response != -1:
            self._response = response  # its first words came before its id was known
        if response != self._response:
            self._response = response
            self.full_text = ""
        self.full_text += text
        self._fade.stop()
        self._show_tail()

    def mark_heard(self, heard: str) -> None:
        """After a barge-in: show only what was actually played, marked as cut off."""
        self.full_text = (heard.rstrip() + " —") if heard.strip() else ""
        self._show_tail()

    def take_back(self, response: int) -> None:
        """An answer was retracted before it was heard: its words go (-1: the answer
        being prepared, whose id was not known yet)."""
        if self._response in (response, -1):
            self.clear_text()

    def clear_text(self) -> None:
        self._response = None
        self.full_text = ""
        self.setText("")
        self.hide()

    def _show_tail(self) -> None:
        text = tail(self.full_text, MAX_CHARS)
        self.setText(breakable(text))
        self.setVisible(bool(text))
