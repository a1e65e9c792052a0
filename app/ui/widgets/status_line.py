"""The status bar: which model, how its weights are held, where it runs, and the GPU
memory in use (refreshed every 2 s while the window is open)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QStatusBar

from app.config.settings import Settings
from app.ui import hardware
from app.ui.options import LaunchOverrides, describe_model, is_self_check

VRAM_EVERY_MS = 2000


class StatusLine:
    def __init__(self, bar: QStatusBar) -> None:
        bar.setSizeGripEnabled(False)
        self.model = QLabel("No model loaded", bar)
        self.quant = QLabel("", bar)
        self.device = QLabel("", bar)
        self.vram = QLabel("", bar)
        for label in (self.model, self.quant, self.device):
            bar.addWidget(label)
        bar.addPermanentWidget(self.vram)
        self._hardware: hardware.Hardware | None = None
        self.planned_gib: float | None = None  # the loaded model's memory plan, GiB
        self._timer = QTimer(bar)
        self._timer.setInterval(VRAM_EVERY_MS)
        self._timer.timeout.connect(self.update_vram)
        self._timer.start()

    def show(self, settings: Settings, overrides: LaunchOverrides,
             found: hardware.Hardware | None) -> None:
        self._hardware = found
        name = describe_model(settings, overrides)
        folder = overrides.model_dir or (
            Path(settings.model.local_dir) if settings.model.local_dir else None)
        check = " (self-check)" if is_self_check(folder) else ""
        self.model.setText(f"Model: {name}{check}")
        self.quant.setText(f"Weights: {overrides.quant or settings.model.quant}")
        device = overrides.device or settings.model.device
        gpu = found.best if found else None
        if device == "cpu" or (found is not None and gpu is None):
            where = "CPU"
        elif gpu is not None:
            where = f"{gpu.name} ({gpu.total_gib:.0f} GiB)"
        else:
            where = "looking for a GPU…"
        self.device.setText(f"Device: {where}")
        self.update_vram()

    def update_vram(self) -> None:
        used = hardware.vram_in_use_gib() if self._hardware is not None else None
        text = "VRAM: —" if used is None else f"VRAM in use: {used:.1f} GiB"
        if self.planned_gib is not None:  # the loaded model's memory plan, as loaded
            text += f" (planned {self.planned_gib:.1f})"
        self.vram.setText(text)

    def stop(self) -> None:
        self._timer.stop()
