"""The first-start window: what is being done and why, which package, bytes so far of the
total, time left; Cancel keeps what was downloaded and turns into Resume.

The job runs on a worker thread; what it reports reaches the window through Qt signals
(queued onto the GUI thread).
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from duetto_launcher.builder import Builder, BuildError, State
from duetto_launcher.download import Cancelled, Progress
from duetto_launcher.plan import Wheel
from duetto_launcher.rate import Rate, size_text, time_text
from duetto_launcher.torch_choice import TorchChoice


class _Relay(QObject):
    said = Signal(str)
    moved = Signal(str, int, int)
    finished = Signal(str, str)  # outcome (done | cancelled | failed), message


class _RelayListener:
    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def say(self, text: str) -> None:
        self.relay.said.emit(text)

    def progress(self, step: Progress) -> None:
        self.relay.moved.emit(step.package, step.done_bytes, step.total_bytes)


class SetupWindow(QDialog):
    def __init__(self, job: Builder, choice: TorchChoice, plan: list[Wheel], now: State):
        super().__init__()
        self.job, self.choice, self.plan, self.now = job, choice, plan, now
        self.outcome = "failed"
        self.rate = Rate()
        self.setWindowTitle("Duetto — setting up")
        self.setMinimumWidth(520)
        self.relay = _Relay()
        self.relay.said.connect(self._said, Qt.ConnectionType.QueuedConnection)
        self.relay.moved.connect(self._moved, Qt.ConnectionType.QueuedConnection)
        self.relay.finished.connect(self._finished, Qt.ConnectionType.QueuedConnection)
        job.listener = _RelayListener(self.relay)

        self.stage = QLabel(now.detail or "Preparing Duetto…")
        self.stage.setWordWrap(True)
        self.torch = QLabel(f"torch: the {choice.label} build. {choice.reason}")
        self.torch.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bytes = QLabel("")
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(self._cancel_or_resume)
        self.quit = QPushButton("Quit")
        self.quit.clicked.connect(self.reject)
        self.quit.hide()
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.quit)
        buttons.addWidget(self.cancel)
        layout = QVBoxLayout(self)
        for widget in (self.stage, self.torch, self.bar, self.bytes):
            layout.addWidget(widget)
        layout.addLayout(buttons)

    def start(self) -> None:
        self.job.downloader.cancel.clear()
        self.cancel.setText("Cancel")
        self.quit.hide()
        threading.Thread(target=self._work, name="duetto-setup", daemon=True).start()

    def _work(self) -> None:
        try:
            self.job.ensure(self.choice, self.plan, self.now)
        except Cancelled:
            self.relay.finished.emit("cancelled", "Cancelled. What was downloaded is kept; "
                                                  "Resume goes on from there.")
        except BuildError as exc:
            self.relay.finished.emit("failed", str(exc))
        except Exception as exc:  # shown, not lost: the window is the only place to say it
            self.relay.finished.emit("failed", f"Setting up failed: {exc}")
        else:
            self.relay.finished.emit("done", "")

    def _said(self, text: str) -> None:
        self.stage.setText(text)

    def _moved(self, package: str, done: int, total: int) -> None:
        self.rate.add(done)
        self.bar.setValue(int(1000 * done / total) if total else 1000)
        left = self.rate.seconds_left(total - done)
        self.bytes.setText(f"{package}   {size_text(done)} of {size_text(total)}   "
                           f"{time_text(left)}")

    def _cancel_or_resume(self) -> None:
        if self.cancel.text() == "Resume":
            self.rate = Rate()
            self.start()
        else:
            self.cancel.setEnabled(False)
            self.job.downloader.cancel.set()

    def _finished(self, outcome: str, message: str) -> None:
        self.outcome = outcome
        self.cancel.setEnabled(True)
        if outcome == "done":
            self.accept()
            return
        self.stage.setText(message)
        self.quit.show()
        self.cancel.setText("Resume")  # a failed download resumes from where it broke off


def run_in_window(job: Builder, choice: TorchChoice, plan: list[Wheel], now: State) -> int:
    app = QApplication.instance() or QApplication([])
    window = SetupWindow(job, choice, plan, now)
    window.show()
    window.start()
    window.exec()
    del app
    return {"done": 0, "cancelled": 4}.get(window.outcome, 3)
