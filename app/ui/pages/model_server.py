"""Settings → Model, "A server": the model runs on another machine.

Address, model name and token of a vLLM-Omni or `duetto serve` server, with a
connection test that says what the server runs. The token goes to the system keyring
(app/config/server_token.py), not to settings.json; where there is no keyring, the note
says it is kept only until Duetto closes.
"""

from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QWidget

from app.config import server_token
from app.config.settings import Settings
from app.ui.pages.common import note, set_note
from app.ui.tasks import TaskGroup


def test_connection(address: str, model: str, token: str, progress, cancel) -> str:
    """One session opened and closed: what the server runs, in a line."""
    from app.model.contract import ModelSource, Quant
    from app.model.remote.backend import RemoteBackend

    remote = RemoteBackend(address=address, model=model, token=token or None,
                           connect_timeout_s=5.0)
    try:
        remote.load(ModelSource(), Quant.BF16, progress)
        return remote.describe()
    finally:
        remote.close()


class ServerBox(QWidget):
    def __init__(self, settings: Settings, tasks: TaskGroup, parent: QWidget | None = None
                 ) -> None:
        super().__init__(parent)
        self.tasks = tasks
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setHorizontalSpacing(14)
        self.address = QLineEdit(settings.model.server_address, self)
        self.address.setPlaceholderText("ws://gpu-box:8099 (vLLM-Omni or `duetto serve`)")
        self.model = QLineEdit(settings.model.server_model, self)
        self.model.setPlaceholderText("the model name the server expects (optional)")
        self.token = QLineEdit(server_token.load(settings.model.server_address), self)
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("the server's token (optional on this machine)")
        row = QHBoxLayout()
        self.test_button = QPushButton("Test connection", self)
        row.addWidget(self.test_button)
        row.addStretch(1)
        self.status = note("", self)
        form.addRow("Address", self.address)
        form.addRow("Model", self.model)
        form.addRow("Token", self.token)
        form.addRow("", row)
        form.addRow("", self.status)
        self.test_button.clicked.connect(self.test)

    def apply_to(self, settings: Settings) -> str:
        """Address and model into settings, the token into the keyring; where it went."""
        settings.model.server_address = self.address.text().strip()
        settings.model.server_model = self.model.text().strip()
        address, token = settings.model.server_address, self.token.text()
        if not address or token == server_token.load(address):
            return ""
        return server_token.save(address, token).note

    def test(self) -> None:
        address = self.address.text().strip()
        if not address:
            set_note(self.status, "Enter the server's address first.", "warning")
            return
        model, token = self.model.text().strip(), self.token.text()
        task = self.tasks.run("server-test", lambda progress, cancel: test_connection(
            address, model, token, progress, cancel))
        self.test_button.setEnabled(False)
        set_note(self.status, f"Connecting to {address}…", "accent")
        task.done.connect(self._tested)
        task.failed.connect(self._failed)
        task.start()

    def _tested(self, described: str) -> None:
        self.test_button.setEnabled(True)
        set_note(self.status, f"Connected: the server runs {described}.", "ok")

    def _failed(self, message: str) -> None:
        self.test_button.setEnabled(True)
        set_note(self.status, f"Not connected: {message}", "error")
