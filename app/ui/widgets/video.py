"""The camera preview: the newest frame, scaled to cover the widget, with rounded corners.

It only ever paints the last QImage it was given (the bridge hands over the newest
frame and drops the rest), so drawing never waits for the camera.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPainterPath, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui import theme


class VideoView(QWidget):
    RADIUS = 14.0

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._placeholder = "Camera off"
        self._hint = ""
        self.frames_shown = 0
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 200)

    def set_frame(self, image: QImage) -> None:
        self._image = image
        self.frames_shown += 1
        self.update()

    def clear(self, placeholder: str, hint: str = "") -> None:
        self._image = None
        self._placeholder = placeholder
        self._hint = hint
        self.update()

    @property
    def has_frame(self) -> bool:
        return self._image is not None

    @property
    def placeholder(self) -> str:
        """What the view says in place of a picture (shown while it has none)."""
        return self._placeholder

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        rect = QRectF(self.rect())
        path = QPainterPath()
        path.addRoundedRect(rect, self.RADIUS, self.RADIUS)
        painter.setClipPath(path)
        painter.fillRect(rect, QColor("#0b0d11"))
        image = self._image
        if image is not None and not image.isNull():
            # Cover: fill the widget, crop what overflows (as video calls do).
            scale = max(rect.width() / image.width(), rect.height() / image.height())
            w, h = image.width() * scale, image.height() * scale
            target = QRectF(rect.center().x() - w / 2, rect.center().y() - h / 2, w, h)
            painter.drawImage(target, image)
        else:
            self._paint_placeholder(painter, rect)
        painter.end()

    def _paint_placeholder(self, painter: QPainter, rect: QRectF) -> None:
        # A soft disc with a camera glyph drawn from shapes (no icon files needed).
        cx, cy = rect.center().x(), rect.center().y() - 24
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(theme.SURFACE_2))
        painter.drawEllipse(QRectF(cx - 44, cy - 44, 88, 88))
        painter.setBrush(QColor(theme.MUTED))
        painter.drawRoundedRect(QRectF(cx - 20, cy - 12, 28, 24), 5, 5)
        lens = QPainterPath()
        lens.moveTo(cx + 10, cy - 3)
        lens.lineTo(cx + 22, cy - 10)
        lens.lineTo(cx + 22, cy + 10)
        lens.lineTo(cx + 10, cy + 3)
        lens.closeSubpath()
        painter.drawPath(lens)
        painter.setPen(QColor(theme.TEXT))
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() + 3)
        font.setBold(True)
        painter.setFont(font)
        painter.drawText(QRectF(rect.left(), cy + 56, rect.width(), 30),
                         Qt.AlignmentFlag.AlignHCenter, self._placeholder)
        if self._hint:
            painter.setPen(QColor(theme.MUTED))
            painter.setFont(self.font())
            painter.drawText(QRectF(rect.left() + 40, cy + 88, rect.width() - 80, 60),
                             Qt.AlignmentFlag.AlignHCenter | Qt.TextFlag.TextWordWrap,
                             self._hint)
