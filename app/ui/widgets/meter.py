"""A level meter for dBFS values: fast to rise, slow to fall, so speech reads as motion
rather than flicker; with a short peak mark."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui import theme

FLOOR_DB = -60.0
FALL_DB_PER_UPDATE = 3.0


def fraction(db: float) -> float:
    """dBFS in [FLOOR_DB, 0] as [0, 1]."""
    return min(1.0, max(0.0, (db - FLOOR_DB) / -FLOOR_DB))


class LevelMeter(QWidget):
    def __init__(self, color: str = theme.SUCCESS, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._color = QColor(color)
        self.level_db = FLOOR_DB
        self.peak_db = FLOOR_DB
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(160, 10)

    def set_level(self, db: float) -> None:
        db = max(FLOOR_DB, min(0.0, db))
        self.level_db = db if db > self.level_db else max(db, self.level_db - FALL_DB_PER_UPDATE)
        self.peak_db = max(self.level_db, self.peak_db - FALL_DB_PER_UPDATE / 3)
        self.update()

    def reset(self) -> None:
        self.level_db = self.peak_db = FLOOR_DB
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        radius = rect.height() / 2
        painter.setPen(QColor(theme.BORDER))
        painter.setBrush(QColor(theme.SURFACE_2))
        painter.drawRoundedRect(rect, radius, radius)
        width = rect.width() * fraction(self.level_db)
        if width > 1:
            gradient = QLinearGradient(rect.topLeft(), rect.topRight())
            gradient.setColorAt(0.0, self._color.darker(140))
            gradient.setColorAt(1.0, self._color)
            painter.setPen(QColor(0, 0, 0, 0))
            painter.setBrush(gradient)
            painter.drawRoundedRect(QRectF(rect.left(), rect.top(), max(width, rect.height()),
                                           rect.height()), radius, radius)
        peak_x = rect.left() + rect.width() * fraction(self.peak_db)
        if self.peak_db > FLOOR_DB + 1:
            painter.setPen(QColor(theme.TEXT))
            painter.drawLine(int(peak_x), int(rect.top() + 2), int(peak_x),
                             int(rect.bottom() - 2))
        painter.end()
