"""Layout helpers shared by the settings pages, so they look like one dialog."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

from app.ui import theme


def page_layout(page: QWidget, title: str, subtitle: str) -> QVBoxLayout:
    layout = QVBoxLayout(page)
    layout.setContentsMargins(28, 22, 28, 22)
    layout.setSpacing(12)
    heading = QLabel(title, page)
    heading.setObjectName("title")
    layout.addWidget(heading)
    if subtitle:
        note = QLabel(subtitle, page)
        note.setObjectName("muted")
        note.setWordWrap(True)
        layout.addWidget(note)
    return layout


def section(parent: QWidget, title: str) -> tuple[QFrame, QVBoxLayout]:
    frame = QFrame(parent)
    frame.setObjectName("card")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(16, 12, 16, 14)
    layout.setSpacing(8)
    label = QLabel(title.upper(), frame)
    label.setObjectName("heading")
    layout.addWidget(label)
    return frame, layout


class Note(QLabel):
    """A wrapped note whose preferred height is the one its text needs at the width it
    has. A plain wrapped QLabel asks for the height of a narrow, squarish block: in a form
    that scrolls, a four-line error got the room of ten lines, centred in blank space."""

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        if self.width() > 0 and self.wordWrap() and self.text():
            return QSize(hint.width(), self.heightForWidth(self.width()))
        return hint

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if event.oldSize().width() != event.size().width():
            self.updateGeometry()  # the height it needs changed with the width


def note(text: str, parent: QWidget, level: str = "muted") -> QLabel:
    label = Note(text, parent)
    label.setWordWrap(True)
    color = {"muted": theme.MUTED, "error": theme.DANGER, "warning": theme.WARNING,
             "ok": theme.SUCCESS, "accent": theme.ACCENT}[level]
    label.setStyleSheet(f"color: {color};")
    return label


def set_note(label: QLabel, text: str, level: str = "muted") -> None:
    color = {"muted": theme.MUTED, "error": theme.DANGER, "warning": theme.WARNING,
             "ok": theme.SUCCESS, "accent": theme.ACCENT}[level]
    label.setStyleSheet(f"color: {color};")
    label.setText(text)
