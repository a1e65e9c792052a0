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
