"""The settings dialog: a page list on the left, the page on the right, Save / Cancel.

It edits a copy of the settings; the window saves them (atomically) on Save. Persona
files are written by the persona page as the user saves each one. Closing the dialog
stops every device test and joins the dialog's task threads.
"""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QHBoxLayout,
    QListWidget,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.config.personas import PersonaLibrary
from app.config.settings import Settings
from app.model.contract import BackendSpec
from app.ui import hardware
from app.ui.pages.conversation import ConversationPage
from app.ui.pages.devices import DevicesPage
from app.ui.pages.model import ModelPage
from app.ui.pages.personas import PersonasPage
from app.ui.tasks import TaskGroup

PAGES = ("persona", "model", "devices", "conversation")
PAGE_TITLES = {"persona": "Persona", "model": "Model", "devices": "Devices",
               "conversation": "Conversation"}


def _scrolling(page: QWidget, parent: QWidget) -> QScrollArea:
    """A page that scrolls where the dialog is too short for it, instead of squeezing its
    notes until their text is cut (a download error showed three of its four lines)."""
    area = QScrollArea(parent)
    area.setWidget(page)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return area


class SettingsDialog(QDialog):
    def __init__(
        self,
        settings: Settings,
        library: PersonaLibrary,
        found: hardware.Hardware | None,
        family_specs: dict[str, Any],
        loaded_spec: BackendSpec | None,
        parent: QWidget | None = None,
        *,
        confirm: bool = True,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Duetto settings")
        self.resize(1060, 720)
        self.setMinimumSize(960, 640)
        self.settings = copy.deepcopy(settings)
        self.confirm = confirm  # ask before saving a model that will not fit
        self.tasks = TaskGroup(self)
        spec = loaded_spec or family_specs.get(self.settings.model.family)

        self.nav = QListWidget(self)
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(180)
        self.stack = QStackedWidget(self)
        self.personas = PersonasPage(self.settings, library, spec, self.tasks, self)
        self.model = ModelPage(self.settings, found, self.tasks, self)
        self.devices = DevicesPage(self.settings, self.tasks, self)
        self.conversation = ConversationPage(self.settings, self)
        for key, page in zip(PAGES, (self.personas, self.model, self.devices,
                                     self.conversation), strict=True):
            self.nav.addItem(PAGE_TITLES[key])
            self.stack.addWidget(_scrolling(page, self))
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.nav.setCurrentRow(0)

        save = QPushButton("Save", self)
        save.setObjectName("primary")
        save.setDefault(True)
        cancel = QPushButton("Cancel", self)
        save.clicked.connect(self.accept)
        cancel.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(cancel)
        buttons.addWidget(save)

        right = QVBoxLayout()
        right.addWidget(self.stack, 1)
        right.addLayout(buttons)
        right.setContentsMargins(0, 0, 18, 16)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(12, 16, 0, 0)
        outer.addWidget(self.nav)
        outer.addLayout(right, 1)

    @property
    def personas_changed(self) -> bool:
        return self.personas.changed

    def show_page(self, key: str) -> None:
        if key in PAGES:
            self.nav.setCurrentRow(PAGES.index(key))

    def set_hardware(self, found: hardware.Hardware) -> None:
        self.model.set_hardware(found)

    def set_specs(self, specs: dict[str, Any]) -> None:
        if self.personas.spec is None:
            self.personas.set_spec(specs.get(self.settings.model.family))

    def result_settings(self) -> Settings:
        result = copy.deepcopy(self.settings)
        self.model.apply_to(result)
        self.devices.apply_to(result)
        self.conversation.apply_to(result)
        return result

    def accept(self) -> None:
        if self.confirm and self.model.will_not_fit():
            fit = self.model.fit()
            answer = QMessageBox.warning(
                self, "This model will not fit",
                f"The chosen model {fit.describe() if fit else ''}.\n\nLoading it will "
                "probably fail with an out-of-memory error. Save anyway?",
                QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel)
            if answer != QMessageBox.StandardButton.Save:
                self.show_page("model")
                return
        self._close_down()
        super().accept()

    def reject(self) -> None:
        self._close_down()
        super().reject()

    def _close_down(self) -> None:
        self.devices.stop_tests()
        self.tasks.shutdown()
