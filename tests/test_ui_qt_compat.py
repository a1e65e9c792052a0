"""Emitting signals from Python for as long as a long conversation does must not abort
the process (PySide6 6.12.0 takes a reference from True on every emit; qt_compat.py)."""

from __future__ import annotations

import subprocess
import sys

EMITS = 300_000  # about 1.5 hours of a conversation's signals (levels, frames, units)

SCRIPT = f"""
import sys
import app.ui  # applies the guard
from PySide6.QtCore import QObject, Signal

class Source(QObject):
    level = Signal(float, float)

source = Source()
source.level.connect(lambda mic, assistant: None)
for _ in range({EMITS}):
    source.level.emit(-20.0, -30.0)
print("alive", sys.getrefcount(True) > 0)
"""


def test_a_long_run_of_emits_does_not_use_up_true():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alive True" in done.stdout


def test_the_guard_changes_nothing_where_emit_behaves(monkeypatch):
    from app.ui import qt_compat

    monkeypatch.setattr(qt_compat, "emit_drops_a_reference", lambda: False)
    before = sys.getrefcount(True)
    assert qt_compat.guard_bool_refcounts() is False
    assert abs(sys.getrefcount(True) - before) < 100


PAINTS = 4_000  # about 30 void calls each: well past None's ~40,000 references

PAINT_SCRIPT = f"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
import app.ui  # applies the guard
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QApplication

qt = QApplication([])
image = QImage(64, 64, QImage.Format.Format_RGB32)
painter = QPainter(image)
for _ in range({PAINTS}):
    for _ in range(10):  # as many calls that return nothing as a placeholder paint
        painter.setBrush(QColor("#223344"))
        painter.drawEllipse(QRectF(1, 1, 30, 30))
        painter.fillRect(QRectF(0, 0, 8, 8), QColor("#000000"))
painter.end()
print("alive", sys.getrefcount(None) > 0)
"""


def test_a_long_run_of_painting_does_not_use_up_none():
    done = subprocess.run([sys.executable, "-c", PAINT_SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alive True" in done.stdout


def test_the_none_guard_changes_nothing_where_void_calls_behave(monkeypatch):
    from app.ui import qt_compat

    monkeypatch.setattr(qt_compat, "void_call_drops_a_reference", lambda: False)
    before = sys.getrefcount(None)
    assert qt_compat.guard_none_refcount() is False
    assert abs(sys.getrefcount(None) - before) < 1000
