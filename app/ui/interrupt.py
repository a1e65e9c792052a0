"""Ctrl+C in the terminal ends the app as closing its window does.

Python runs a signal handler only when the interpreter gets control back, and Qt's event
loop is C++ that can wait for minutes: the default handler then raised KeyboardInterrupt
inside whatever slot ran next (a traceback, and the app kept running). A handler of our
own asks the window to close, and a timer gives the interpreter control five times a
second so that the handler runs promptly.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from PySide6.QtCore import QCoreApplication, QTimer

WAKE_MS = 200


def end_on_ctrl_c(app: QCoreApplication, end: Callable[[], None]) -> QTimer:
    """On SIGINT call `end()` (on the Qt main thread). Returns the wake-up timer."""
    signal.signal(signal.SIGINT, lambda _signum, _frame: QTimer.singleShot(0, end))
    timer = QTimer(app)
    timer.setInterval(WAKE_MS)
    timer.timeout.connect(lambda: None)  # nothing to do: waking the interpreter is enough
    timer.start()
    return timer
