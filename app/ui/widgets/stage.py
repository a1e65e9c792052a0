"""The stage: the video with its overlays (the state pill, the self-check badge and the
live subtitles), laid out over the picture whenever it changes size."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLabel, QWidget

from app.ui import theme
from app.ui.widgets.state import StatePill
from app.ui.widgets.subtitles import Subtitles
from app.ui.widgets.video import VideoView


class Stage(VideoView):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pill = StatePill(self)
        self.badge = QLabel("SELF-CHECK · tiny random model, not a real one", self)
        self.badge.setStyleSheet(
            f"background: {theme.WARNING}; color: #1b1405; font-weight: 700;"
            " border-radius: 8px; padding: 5px 10px;"
        )
        self.badge.hide()
        self.subtitles = Subtitles(self)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self.pill.adjustSize()
        self.pill.move(16, 16)
        self.badge.adjustSize()
        x = self.width() - self.badge.width() - 16
        beside = x >= self.pill.geometry().right() + 12
        # Where the stage is too narrow for both on one line, the badge goes under the pill.
        self.badge.move(x if beside else 16, 18 if beside else self.pill.geometry().bottom() + 8)
        width = min(self.width() - 48, 760)
        self.subtitles.setFixedWidth(width)
        self.subtitles.adjustSize()
        self.subtitles.move((self.width() - width) // 2,
                            self.height() - self.subtitles.height() - 22)

    def relayout(self) -> None:
        self.resizeEvent(None)
