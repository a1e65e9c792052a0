"""A message strip at the top of the window: errors and notices stay readable and can be
dismissed, and never block the rest of the window the way a modal box would."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.ui import theme

_LEVEL_COLORS = {
    "error": (theme.DANGER, "#2b1719"),
    "warning": (theme.WARNING, "#2a2315"),
    "info": (theme.ACCENT, "#171d2e"),
}
MAX_MESSAGES = 4


class Message(QWidget):
    def __init__(self, level: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.level = level
        self.text = text
        edge, fill = _LEVEL_COLORS.get(level, _LEVEL_COLORS["info"])
        self.setObjectName("message")
        # A plain QWidget paints no style-sheet background unless asked: without this the
        # banner's colour and frame were never drawn.
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setStyleSheet(
            f"QWidget#message {{ background: {fill}; border: 1px solid {edge};"
            " border-radius: 10px; }"
        )
        layout = QHBoxLayout(self)
        layout.setContentsMargins(14, 8, 8, 8)
        label = QLabel(text, self)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QPushButton("✕", self)
        close.setObjectName("flat")
        close.setToolTip("Dismiss")
        close.setFixedWidth(32)
        close.clicked.connect(self.dismiss)
        layout.addWidget(label, 1)
        layout.addWidget(close)

        self.dismissed = False

    def dismiss(self) -> None:
        self.dismissed = True
        self.hide()
        self.deleteLater()


class MessageBar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(6)
        self._posted: list[Message] = []

    def post(self, level: str, text: str) -> Message:
        for old in self.messages():
            if old.text == text:  # the same message again: keep one
                old.dismiss()
        message = Message(level, text, self)
        self._layout.addWidget(message)
        message.show()
        self._posted.append(message)
        shown = self.messages()
        for extra in shown[:-MAX_MESSAGES]:
            extra.dismiss()
        return message

    def messages(self) -> list[Message]:
        self._posted = [m for m in self._posted if not m.dismissed]
        return list(self._posted)

    def texts(self) -> list[str]:
        return [m.text for m in self.messages()]

    def clear(self) -> None:
        for message in self.messages():
            message.dismiss()
