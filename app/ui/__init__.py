"""The desktop app (PySide6).

Importing any part of it first guards against a PySide6 bug that would abort a long
conversation (qt_compat.py); the probe costs a few microseconds, once.
"""

from app.ui.qt_compat import guard_refcounts

guard_refcounts()
