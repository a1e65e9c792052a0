"""First run: no model chosen yet. Shows the GPU that was found, what fits on it and how
big each download is; or a local folder; and without a GPU, the CPU (slow) or the
self-check. The choice is written into the settings by the window."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.config.settings import Settings
from app.model import registry
from app.model.contract import Quant
from app.ui import hardware
from app.ui.pages.common import note, set_note

_QUANT_PREFERENCE = (Quant.BF16, Quant.INT8, Quant.NF4)


@dataclass(frozen=True)
class FirstRunChoice:
    model_id: str = ""
    local_dir: str = ""
    quant: str = ""
    device: str = ""
    open_model_page: bool = False  # to download it, or to build the self-check
    self_check: bool = False

    def apply(self, settings: Settings) -> None:
        model = settings.model
        if self.model_id:
            model.model_id, model.local_dir = self.model_id, ""
        if self.local_dir:
            model.local_dir = self.local_dir
        if self.quant:
            model.quant = self.quant
        if self.device:
            model.device = self.device


def best_quant(entry: registry.RegistryEntry, found: hardware.Hardware | None) -> Quant:
    """The best-quality quantization that fits the GPU with the family's default context
    (16k tokens for Qwen); else the best that fits at all; 4-bit when nothing does."""
    fits = {quant: hardware.fit(entry, quant, found) for quant in _QUANT_PREFERENCE}
    for quant, fit in fits.items():
        if fit.fits and fit.context >= fit.default_context:
            return quant
    return next((quant for quant, fit in fits.items() if fit.fits), Quant.NF4)


class FirstRunDialog(QDialog):
    def __init__(self, found: hardware.Hardware | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Welcome to Duetto")
        self.resize(680, 520)
        self.choice: FirstRunChoice | None = None
        self.hardware = found
        layout = QVBoxLayout(self)
        layout.setContentsMargins(28, 24, 28, 20)
        layout.setSpacing(12)
        title = QLabel("Welcome to Duetto", self)
        title.setObjectName("title")
        layout.addWidget(title)
        layout.addWidget(note("Duetto talks with you through a model that runs on your own "
                              "computer. Pick one to start; you can change it later in "
                              "Settings → Model.", self))
        self.gpu_note = note("", self)
        layout.addWidget(self.gpu_note)
        self.models = QListWidget(self)
        layout.addWidget(self.models, 1)
        row = QHBoxLayout()
        self.use_button = QPushButton("Use this model", self)
        self.use_button.setObjectName("primary")
        self.folder_button = QPushButton("Use a model folder…", self)
        self.cpu_button = QPushButton("Use the CPU (slow)", self)
        self.selfcheck_button = QPushButton("Run the self-check", self)
        self.later_button = QPushButton("Later", self)
        row.addWidget(self.folder_button)
        row.addWidget(self.cpu_button)
        row.addWidget(self.selfcheck_button)
        row.addStretch(1)
        row.addWidget(self.later_button)
        row.addWidget(self.use_button)
        layout.addLayout(row)
        self.use_button.clicked.connect(self._use_selected)
        self.folder_button.clicked.connect(self._use_folder)
        self.cpu_button.clicked.connect(self._use_cpu)
        self.selfcheck_button.clicked.connect(self._self_check)
        self.later_button.clicked.connect(self.reject)
        self.models.itemDoubleClicked.connect(lambda _i: self._use_selected())
        self.models.currentRowChanged.connect(lambda _row: self._sync_use_button())
        self._fill()

    def set_hardware(self, found: hardware.Hardware) -> None:
        self.hardware = found
        self._fill()

    def _fill(self) -> None:
        found = self.hardware
        gpu = found.best if found else None
        if found is None:
            set_note(self.gpu_note, "Looking for a GPU…")
        elif gpu is None:
            set_note(self.gpu_note, f"No GPU here: {found.note}. Run the self-check to see "
                                    "the whole app work with a tiny model, or use the CPU "
                                    "if you can wait for every answer.", "warning")
        else:
            set_note(self.gpu_note, f"Your GPU: {gpu.name} with {gpu.total_gib:.1f} GiB. "
                                    "Models marked ✓ fit on it.", "ok")
        self.cpu_button.setVisible(found is not None and gpu is None)
        # Without a GPU the self-check is what works here; a GPU model is only a choice
        # the user makes on purpose, never the preselected default.
        self._make_primary(self.selfcheck_button if found is not None and gpu is None
                           else self.use_button)
        self.models.clear()
        if found is None:  # the plans are made with the GPU's size, once it is known
            self._sync_use_button()
            return
        best_row = -1
        for entry in registry.entries():
            if not entry.supported:
                continue
            quant = best_quant(entry, found)
            fit = hardware.fit(entry, quant, found)
            mark = "✓" if fit.fits else ("✗" if fit.fits is False else "·")
            verdict = {True: "fits your GPU", False: "too big for your GPU",
                       None: "needs a GPU"}[fit.fits]
            context = (f", {fit.context} {fit.unit} of context" if fit.fits else "")
            text = (f"{mark}  {entry.id}  —  {verdict}\n"
                    f"      {quant.value} weights, {fit.needed_gib:.1f} GiB of GPU memory"
                    f"{context} · download {entry.download_gb:.0f} GB · {entry.license}")
            item = QListWidgetItem(text)
            item.setSizeHint(QSize(0, 58))
            item.setData(Qt.ItemDataRole.UserRole, (entry.id, quant.value))
            self.models.addItem(item)
            if fit.fits:
                best_row = self.models.count() - 1  # entries go small to big: keep the last
        # Only a model that fits is selected for the user; otherwise nothing is.
        self.models.setCurrentRow(best_row)
        self._sync_use_button()

    def _make_primary(self, button: QPushButton) -> None:
        for candidate in (self.use_button, self.selfcheck_button):
            candidate.setObjectName("primary" if candidate is button else "")
            candidate.setDefault(candidate is button)
            candidate.style().unpolish(candidate)
            candidate.style().polish(candidate)

    def _sync_use_button(self) -> None:
        self.use_button.setEnabled(self.models.currentItem() is not None)

    def _use_selected(self) -> None:
        item = self.models.currentItem()
        if item is None:
            return
        model_id, quant = item.data(Qt.ItemDataRole.UserRole)
        self.choice = FirstRunChoice(model_id=model_id, quant=quant, open_model_page=True)
        self.accept()

    def _use_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", str(Path.home()))
        if folder:
            self.choice = FirstRunChoice(local_dir=folder)
            self.accept()

    def _use_cpu(self) -> None:
        smallest = min((e for e in registry.entries() if e.supported),
                       key=lambda e: e.download_gb)
        self.choice = FirstRunChoice(model_id=smallest.id, quant=Quant.BF16.value,
                                     device="cpu", open_model_page=True)
        self.accept()

    def _self_check(self) -> None:
        self.choice = FirstRunChoice(device="cpu", quant=Quant.BF16.value,
                                     open_model_page=True, self_check=True)
        self.accept()
