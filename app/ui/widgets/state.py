"""The state pill: a coloured dot and a word (Listening, Thinking, Speaking, Interrupted),
large enough to read across the room; the dot pulses gently while the state is live."""

from __future__ import annotations

import math

from PySide6.QtCore import QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPaintEvent
from PySide6.QtWidgets import QWidget

from app.ui import theme

_LIVE = {"listening", "responding", "speaking", "loading", "starting"}


class StatePill(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = "idle"
        self.reason = ""
        self._phase = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(50)
        self._timer.timeout.connect(self._tick)
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() + 2)
        font.setBold(True)
        self.setFont(font)

    @property
    def label(self) -> str:
        return theme.STATE_LABELS.get(self.state, self.state.capitalize())

    def set_state(self, state: str, reason: str = "") -> None:
        self.state = state
        self.reason = reason
        self.setToolTip(reason)
        if state in _LIVE:
            self._timer.start()
        else:
            self._timer.stop()
            self._phase = 0.0
        self.updateGeometry()
        self.adjustSize()
        self.update()

    def _tick(self) -> None:
        self._phase = (self._phase + 0.08) % (2 * math.pi)
        self.update()

    def sizeHint(self) -> QSize:
        metrics = QFontMetrics(self.font())
        return QSize(metrics.horizontalAdvance(self.label) + 52, metrics.height() + 18)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        color = QColor(theme.STATE_COLORS.get(self.state, theme.MUTED))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(12, 14, 18, 200))
        painter.drawRoundedRect(rect, rect.height() / 2, rect.height() / 2)
        cy = rect.center().y()
        glow = QColor(color)
        glow.setAlphaF(0.25 + 0.2 * (1 + math.sin(self._phase)) / 2)
        painter.setBrush(glow)
        painter.drawEllipse(QRectF(rect.left() + 8, cy - 10, 20, 20))
        painter.setBrush(color)
        painter.drawEllipse(QRectF(rect.left() + 13, cy - 5, 10, 10))
        painter.setPen(QColor(theme.TEXT))
        painter.drawText(rect.adjusted(36, 0, -12, 0),
                         Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, self.label)
        painter.end()
