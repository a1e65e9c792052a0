"""Settings → Model: which checkpoint, how its weights are held, where it runs, and
whether it fits the GPU that was found. Downloads run on a task thread with progress
and a cancel button; a self-check model (tiny, random) is built the same way.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QWidget,
)

from app import paths
from app.config.settings import Settings
from app.model import families, registry
from app.model.contract import BackendError, Quant
from app.ui import hardware
from app.ui.options import is_self_check
from app.ui.pages.common import note, page_layout, section, set_note
from app.ui.pages.model_server import ServerBox
from app.ui.tasks import TaskGroup

QUANT_LABELS = {
    Quant.NF4: "4-bit (nf4) — smallest, a little less accurate",
    Quant.INT8: "8-bit (int8) — half the memory of 16-bit",
    Quant.BF16: "16-bit (bf16) — full quality, most memory",
    Quant.FP16: "16-bit (fp16) — for GPUs without bf16",
}
DEVICE_LABELS = {"auto": "GPU if there is one, else CPU", "cuda": "GPU (CUDA)",
                 "cpu": "CPU (slow: far from real time)"}


def self_check_dir(family: str) -> Path:
    return paths.models_dir() / f"self-check-{family}"


def _cached_ids() -> set[str]:
    try:
        return {c.id for c in registry.cached()}
    except BackendError:
        return set()


class ModelPage(QWidget):
    def __init__(self, settings: Settings, found: hardware.Hardware | None, tasks: TaskGroup,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.hardware = found
        self.tasks = tasks
        self._download = None
        layout = page_layout(self, "Model", "The model that talks with you. Bigger models "
                                            "answer better and need more GPU memory.")

        where, w = section(self, "Where the weights come from")
        self.registry_radio = QRadioButton("A model from the list", where)
        self.folder_radio = QRadioButton("A folder on this computer", where)
        self.server_radio = QRadioButton("A server on another machine (vLLM-Omni or "
                                         "`duetto serve`)", where)
        group = QButtonGroup(self)
        group.addButton(self.registry_radio)
        group.addButton(self.folder_radio)
        group.addButton(self.server_radio)
        form = QFormLayout()
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(10)
        self.family = QComboBox(where)
        for name in families.known():
            self.family.addItem(families.get(name).description, name)
        self.entry = QComboBox(where)
        form.addRow(self.registry_radio)
        form.addRow("Family", self.family)
        form.addRow("Model", self.entry)
        row = QHBoxLayout()
        self.download_button = QPushButton("Download", where)
        self.download_progress = QProgressBar(where)
        self.download_progress.setRange(0, 1000)
        self.download_progress.setFixedHeight(8)
        self.download_progress.hide()
        self.cancel_button = QPushButton("Cancel", where)
        self.cancel_button.hide()
        row.addWidget(self.download_button)
        row.addWidget(self.download_progress, 1)
        row.addWidget(self.cancel_button)
        row.addStretch(0)
        form.addRow("", row)
        self.entry_note = note("", where)
        # A download error holds a command to copy (how to fetch it on another machine).
        self.entry_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("", self.entry_note)
        form.addRow(self.folder_radio)
        row = QHBoxLayout()
        self.folder = QLineEdit(where)
        self.folder.setPlaceholderText("a folder with config.json and the weights")
        self.browse_button = QPushButton("Browse…", where)
        self.selfcheck_button = QPushButton("Build self-check model", where)
        self.selfcheck_button.setToolTip("A tiny random model that runs the whole app on any "
                                         "machine; it speaks gibberish, by design")
        row.addWidget(self.folder, 1)
        row.addWidget(self.browse_button)
        row.addWidget(self.selfcheck_button)
        form.addRow("Folder", row)
        form.addRow(self.server_radio)
        self.server = ServerBox(settings, tasks, where)
        form.addRow(self.server)
        self.token_note = note("", where)
        form.addRow("", self.token_note)
        w.addLayout(form)
        layout.addWidget(where)

        how, h = section(self, "How it runs")
        form = QFormLayout()
        form.setHorizontalSpacing(14)
        self.quant = QComboBox(how)
        for quant in (Quant.NF4, Quant.INT8, Quant.BF16, Quant.FP16):
            self.quant.addItem(QUANT_LABELS[quant], quant.value)
        self.device = QComboBox(how)
        for key, label in DEVICE_LABELS.items():
            self.device.addItem(label, key)
        form.addRow("Weights", self.quant)
        form.addRow("Device", self.device)
        h.addLayout(form)
        self.gpu_note = note("", how)
        self.fit_note = note("", how)
        h.addWidget(self.gpu_note)
        h.addWidget(self.fit_note)
        layout.addWidget(how)
        layout.addStretch(1)

        self._load(settings)
        self.family.currentIndexChanged.connect(self._fill_entries)
        for signal in (self.entry.currentIndexChanged, self.quant.currentIndexChanged,
                       self.device.currentIndexChanged, self.registry_radio.toggled,
                       self.server_radio.toggled, self.folder.textChanged):
            signal.connect(self.refresh)
        self.browse_button.clicked.connect(self._browse)
        self.download_button.clicked.connect(self.download)
        self.cancel_button.clicked.connect(self._cancel_download)
        self.selfcheck_button.clicked.connect(self.build_self_check)
        self.refresh()

    # ------------------------------------------------------------------ values
    def _load(self, settings: Settings) -> None:
        model = settings.model
        self.family.setCurrentIndex(max(0, self.family.findData(model.family)))
        self._fill_entries()
        index = self.entry.findData(model.model_id)
        if index >= 0:
            self.entry.setCurrentIndex(index)
        self.folder.setText(model.local_dir)
        chosen = (self.server_radio if model.use_server else
                  self.folder_radio if model.local_dir else self.registry_radio)
        chosen.setChecked(True)
        self.quant.setCurrentIndex(max(0, self.quant.findData(model.quant)))
        self.device.setCurrentIndex(max(0, self.device.findData(model.device)))

    def _fill_entries(self) -> None:
        family = self.family.currentData()
        cached = _cached_ids()
        self.entry.blockSignals(True)
        self.entry.clear()
        for entry in registry.entries():
            if entry.family != family:
                continue
            mark = "  ✓ downloaded" if entry.id in cached else f"  ({entry.download_gb:.0f} GB)"
            self.entry.addItem(f"{entry.id}{mark}", entry.id)
        self.entry.blockSignals(False)
        self.refresh()

    def apply_to(self, settings: Settings) -> None:
        model = settings.model
        model.family = str(self.family.currentData())
        model.model_id = str(self.entry.currentData() or "")
        model.local_dir = self.folder.text().strip() if self.folder_radio.isChecked() else ""
        model.quant = str(self.quant.currentData())
        model.device = str(self.device.currentData())
        model.use_server = self.server_radio.isChecked()
        kept = self.server.apply_to(settings)
        if kept:
            set_note(self.token_note, kept[:1].upper() + kept[1:] + ".",
                     "ok" if "keyring" in kept and "only until" not in kept else "warning")

    def selected_entry(self) -> registry.RegistryEntry | None:
        model_id = self.entry.currentData()
        try:
            return registry.get(model_id) if model_id else None
        except BackendError:
            return None

    # ------------------------------------------------------------------ estimate
    def set_hardware(self, found: hardware.Hardware) -> None:
        self.hardware = found
        self.refresh()

    def fit(self) -> hardware.Fit | None:
        entry = self.selected_entry()
        if entry is None or not self.registry_radio.isChecked():
            return None
        return hardware.fit(entry, Quant(self.quant.currentData()), self.hardware)

    def will_not_fit(self) -> bool:
        found = self.fit()
        return bool(found and found.fits is False and self.device.currentData() != "cpu")

    def refresh(self) -> None:
        registry_mode = self.registry_radio.isChecked()
        for widget in (self.family, self.entry, self.download_button):
            widget.setEnabled(registry_mode)
        server_mode = self.server_radio.isChecked()
        for widget in (self.folder, self.browse_button):
            widget.setEnabled(self.folder_radio.isChecked())
        self.server.setEnabled(server_mode)
        entry = self.selected_entry()
        if entry is not None:
            cached = entry.id in _cached_ids()
            text = f"{entry.hub_id} · {entry.license} · download {entry.download_gb:.1f} GB"
            if entry.note:
                text += f" · {entry.note}"
            set_note(self.entry_note, text)
            self.download_button.setText("Downloaded ✓" if cached else
                                         f"Download ({entry.download_gb:.1f} GB)")
            self.download_button.setEnabled(registry_mode and not cached
                                            and self._download is None)
        found = self.hardware
        if found is None:
            set_note(self.gpu_note, "Looking for a GPU…")
        elif found.best is None:
            set_note(self.gpu_note, f"No GPU: {found.note}. Choose the CPU (slow), or run the "
                                    "self-check to try the whole app with a tiny model.",
                     "warning")
        else:
            gpu = found.best
            set_note(self.gpu_note, f"GPU: {gpu.name}, {gpu.total_gib:.1f} GiB "
                                    f"({gpu.free_gib:.1f} GiB free)", "ok")
        fit = self.fit()
        folder = self.folder.text().strip()
        if server_mode:
            set_note(self.fit_note, "The server's GPU holds the model: nothing is loaded "
                                    "here. Weights and Device apply to local models.")
        elif not registry_mode:
            if folder and is_self_check(Path(folder)):
                set_note(self.fit_note, "Self-check model: tiny and random, it runs anywhere "
                                        "and says nothing meaningful.", "accent")
            else:
                set_note(self.fit_note, "The memory a folder needs is checked when it loads.")
        elif fit is None:
            set_note(self.fit_note, "")
        elif fit.fits is False and self.device.currentData() != "cpu":
            set_note(self.fit_note, f"⚠ {fit.describe()}. Try 4-bit weights or a smaller "
                                    "model.", "error")
        else:
            set_note(self.fit_note, fit.describe()[:1].upper() + fit.describe()[1:],
                     "ok" if fit.fits else "muted")

    # ------------------------------------------------------------------ actions
    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder",
                                                  self.folder.text() or str(Path.home()))
        if folder:
            self.folder.setText(folder)
            self.folder_radio.setChecked(True)

    def download(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        from app.model.download import download

        task = self.tasks.run("download", lambda progress, cancel: download(entry, progress,
                                                                            cancel))
        self._download = task
        self.download_progress.setValue(0)
        self.download_progress.show()
        self.cancel_button.show()
        self.download_button.setEnabled(False)
        set_note(self.entry_note, "Asking the Hub…", "accent")
        task.progress.connect(self._download_progress)
        task.done.connect(lambda _path: self._download_finished("Downloaded.", "ok"))
        task.failed.connect(lambda msg: self._download_finished(msg, "error"))
        task.start()

    def _download_progress(self, what: str, fraction: float) -> None:
        self.download_progress.setValue(int(fraction * 1000))
        set_note(self.entry_note, f"{what.capitalize()}: {fraction * 100:.0f} %", "accent")

    def _cancel_download(self) -> None:
        if self._download is not None:
            self._download.cancel.set()
            set_note(self.entry_note, "Stopping the download…", "muted")

    def _download_finished(self, message: str, level: str) -> None:
        self._download = None
        self.download_progress.hide()
        self.cancel_button.hide()
        self._fill_entries()
        set_note(self.entry_note, message, level)

    def build_self_check(self) -> None:
        family = str(self.family.currentData())
        target = self_check_dir(family)

        def work(progress, cancel) -> Path:
            from app.model.tiny import build_tiny

            progress("building", 0.1)
            return build_tiny(family, target)

        task = self.tasks.run("self-check", work)
        self.selfcheck_button.setEnabled(False)
        set_note(self.fit_note, "Building the self-check model…", "accent")
        task.done.connect(self._self_check_built)
        task.failed.connect(lambda msg: (self.selfcheck_button.setEnabled(True),
                                         set_note(self.fit_note, f"Not built: {msg}", "error")))
        task.start()

    def _self_check_built(self, folder: Path) -> None:
        self.selfcheck_button.setEnabled(True)
        self.folder.setText(str(folder))
        self.folder_radio.setChecked(True)
        self.quant.setCurrentIndex(self.quant.findData(Quant.BF16.value))
        if self.hardware is not None and self.hardware.best is None:
            self.device.setCurrentIndex(self.device.findData("cpu"))
        self.refresh()
