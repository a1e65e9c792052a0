"""Layout helpers shared by the settings pages, so they look like one dialog."""

from __future__ import annotations

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


def note(text: str, parent: QWidget, level: str = "muted") -> QLabel:
    label = QLabel(text, parent)
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
