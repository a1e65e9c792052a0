"""Finds the GPU, then each family's voices, on a worker thread, and says each as soon
as it is known: the GPU answer must not wait for the model code (importing a family's
backend takes 15 s on a cold start), since the first-run dialog waits on it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.ui import hardware


class HardwareProbe(QObject):
    found = Signal(object)  # hardware.Hardware
    specs_ready = Signal(object)  # {family: BackendSpec | None}

    def __init__(self, detect: Callable[[], hardware.Hardware] = hardware.detect,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._detect = detect
        self.thread: threading.Thread | None = None
        self.hardware: hardware.Hardware | None = None
        self.specs: dict[str, Any] | None = None

    def start(self, families: list[str]) -> None:
        def work() -> None:
            self.hardware = self._detect()
            self.found.emit(self.hardware)
            self.specs = {family: hardware.family_spec(family) for family in families}
            self.specs_ready.emit(self.specs)
            hardware.warm_plans()  # the dialogs' memory figures, made here, not on the UI

        self.thread = threading.Thread(target=work, name="duetto-hardware", daemon=True)
        self.thread.start()

    def deliver(self, on_found: Callable[[hardware.Hardware], None],
                on_specs: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Give each answer to a newcomer (a dialog), now if it is known, else when it is.

        Connected first, then read: an answer found in between reaches it twice (harmless),
        never not at all. (Connected only, a dialog opened after the worker emitted but
        before the window had seen it waited for a GPU answer that never came.)
        """
        for signal, answer, slot in ((self.found, "hardware", on_found),
                                     (self.specs_ready, "specs", on_specs)):
            if slot is None:
                continue
            signal.connect(slot)
            value = getattr(self, answer)
            if value is not None:
                slot(value)

    def join(self, timeout_s: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout_s)
