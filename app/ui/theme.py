"""Colours, type and the style sheet: one dark theme, so video stands out and the state
colours (green listening, amber thinking, blue speaking, red interrupted) read at a glance.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

from app import paths

BG = "#111318"
SURFACE = "#1a1d24"
SURFACE_2 = "#232730"
BORDER = "#2e333d"
TEXT = "#e9ebf1"
MUTED = "#9299a7"
ACCENT = "#6d8cff"
ACCENT_HOVER = "#8aa2ff"
DANGER = "#ff5f5f"
WARNING = "#f4b740"
SUCCESS = "#37c98b"

STATE_COLORS: dict[str, str] = {
    "idle": "#6b7280",
    "loading": "#a78bfa",
    "starting": "#a78bfa",
    "listening": SUCCESS,
    "responding": WARNING,
    "speaking": ACCENT,
    "interrupted": DANGER,
    "stopping": "#6b7280",
}

STATE_LABELS: dict[str, str] = {
    "idle": "Not started",
    "loading": "Loading model…",
    "starting": "Starting…",
    "listening": "Listening",
    "responding": "Thinking",
    "speaking": "Speaking",
    "interrupted": "Interrupted",
    "stopping": "Stopping…",
}

# Icons ship inside the package beside the personas (DUETTO_ASSETS_DIR moves both).
ICONS = (paths.assets_dir() / "icons").as_posix()

STYLE = f"""
* {{ color: {TEXT}; }}
QMainWindow, QDialog {{ background: {BG}; }}
QWidget#panel, QFrame#card {{
    background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 12px;
}}
QLabel {{ background: transparent; }}
QLabel#muted, QLabel[muted="true"] {{ color: {MUTED}; }}
QLabel#heading {{ font-size: 11px; font-weight: 600; color: {MUTED};
    letter-spacing: 1px; }}
QLabel#title {{ font-size: 20px; font-weight: 600; }}
QLabel#bigValue {{ font-size: 15px; font-weight: 600; }}
QPushButton {{
    background: {SURFACE_2}; border: 1px solid {BORDER}; border-radius: 9px;
    padding: 8px 14px; min-height: 20px;
}}
QPushButton:hover {{ background: #2b303b; border-color: #3b4150; }}
QPushButton:pressed {{ background: #1f232b; }}
QPushButton:disabled {{ color: #5c6270; background: #1b1e25; }}
QPushButton:checked {{ background: #3a2730; border-color: {DANGER}; color: #ffd7d7; }}
QPushButton#primary {{
    background: {ACCENT}; border: none; color: #0d1020; font-weight: 700;
    padding: 10px 22px;
}}
QPushButton#primary:hover {{ background: {ACCENT_HOVER}; }}
QPushButton#primary[running="true"] {{ background: {DANGER}; color: #1a0b0b; }}
QPushButton#flat {{ background: transparent; border: none; color: {MUTED}; }}
QPushButton#flat:hover {{ color: {TEXT}; }}
QStatusBar {{ background: {SURFACE}; color: {MUTED}; border-top: 1px solid {BORDER}; }}
QStatusBar QLabel {{ color: {MUTED}; padding: 0 8px; }}
QProgressBar {{
    background: {SURFACE_2}; border: none; border-radius: 4px; height: 8px;
    text-align: center; color: transparent;
}}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 4px; }}
QLineEdit, QPlainTextEdit, QTextEdit, QComboBox, QSpinBox, QDoubleSpinBox {{
    background: {SURFACE_2}; border: 1px solid {BORDER}; border-radius: 8px;
    padding: 6px 8px; selection-background-color: {ACCENT};
}}
QLineEdit:focus, QPlainTextEdit:focus, QComboBox:focus {{ border-color: {ACCENT}; }}
QComboBox::drop-down {{ border: none; background: transparent; width: 24px; }}
QComboBox::down-arrow {{ image: url({ICONS}/chevron-down.svg); width: 12px; height: 8px;
    margin-right: 10px; }}
QComboBox QAbstractItemView {{ background: {SURFACE_2}; border: 1px solid {BORDER};
    selection-background-color: {ACCENT}; }}
QListWidget {{
    background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 10px; padding: 4px;
    outline: none;
}}
QListWidget::item {{ padding: 8px 10px; border-radius: 7px; }}
QListWidget::item:selected {{ background: #2a3350; color: {TEXT}; }}
QListWidget#nav {{ background: transparent; border: none; }}
QListWidget#nav::item {{ padding: 10px 14px; margin: 2px 0; }}
QCheckBox {{ spacing: 8px; }}
QSlider::groove:horizontal {{ height: 6px; background: {SURFACE_2}; border-radius: 3px; }}
QSlider::sub-page:horizontal {{ background: {ACCENT}; border-radius: 3px; }}
QSlider::handle:horizontal {{ background: {TEXT}; width: 16px; margin: -6px 0;
    border-radius: 8px; }}
QToolTip {{ background: {SURFACE_2}; color: {TEXT}; border: 1px solid {BORDER}; }}
QScrollArea {{ border: none; background: transparent; }}
QScrollArea > QWidget > QWidget {{ background: transparent; }}
QScrollBar:vertical {{ background: transparent; width: 8px; margin: 0; }}
QScrollBar::handle:vertical {{ background: {BORDER}; border-radius: 4px; min-height: 28px; }}
QScrollBar::handle:vertical:hover {{ background: {MUTED}; }}
QScrollBar::add-line:vertical, QScrollBar::sub-line:vertical {{ height: 0; }}
QScrollBar::add-page:vertical, QScrollBar::sub-page:vertical {{ background: none; }}
QTabBar::tab {{ padding: 8px 14px; }}
"""


def apply(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = QPalette()
    for role, color in (
        (QPalette.ColorRole.Window, BG),
        (QPalette.ColorRole.WindowText, TEXT),
        (QPalette.ColorRole.Base, SURFACE_2),
        (QPalette.ColorRole.AlternateBase, SURFACE),
        (QPalette.ColorRole.Text, TEXT),
        (QPalette.ColorRole.Button, SURFACE_2),
        (QPalette.ColorRole.ButtonText, TEXT),
        (QPalette.ColorRole.Highlight, ACCENT),
        (QPalette.ColorRole.HighlightedText, "#0d1020"),
        (QPalette.ColorRole.PlaceholderText, MUTED),
        (QPalette.ColorRole.ToolTipBase, SURFACE_2),
        (QPalette.ColorRole.ToolTipText, TEXT),
    ):
        palette.setColor(role, QColor(color))
    app.setPalette(palette)
    font = QFont(app.font())
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
    app.setFont(font)
    app.setStyleSheet(STYLE)
