"""Background tasks for dialogs: run a function on a thread, get its result, its error or
its progress back as signals on the main thread, and join every thread on close.

The function receives `progress(what, fraction)` and a `threading.Event` that is set
when the user cancels; it should check the event at its own pace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

Work = Callable[[Callable[[str, float], None], threading.Event], Any]


class Task(QObject):
    progress = Signal(str, float)
    done = Signal(object)
    failed = Signal(str)

    def __init__(self, name: str, work: Work, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.cancel = threading.Event()
        self._work = work
        self.thread = threading.Thread(target=self._run, name=f"duetto-{name}", daemon=True)

    def start(self) -> Task:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            result = self._work(lambda what, f: self.progress.emit(what, float(f)), self.cancel)
        except Exception as exc:  # shown to the user by whoever started the task
            log.info("task %s failed: %s", self.name, exc)
            self.failed.emit(str(exc) or type(exc).__name__)
            return
        self.done.emit(result)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()


class TaskGroup(QObject):
    """The tasks one dialog started; `shutdown()` cancels and joins them."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.tasks: list[Task] = []

    def run(self, name: str, work: Work) -> Task:
        self.tasks = [t for t in self.tasks if t.running]
        task = Task(name, work, self)
        self.tasks.append(task)
        return task  # connect its signals, then call start()

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        for task in self.tasks:
            task.cancel.set()
        for task in self.tasks:
            if task.thread.ident is not None:
                task.thread.join(timeout_s)
        return not any(t.running for t in self.tasks)
