"""The real main window, offscreen, driven the way a user would for one fault row.

`WindowRun` points the app's user folders at the row's own, opens `MainWindow` with
the row's command-line overrides, and records what the user is told: every message the
window posts, the text of any dialog (closed at once, as if dismissed, so nothing waits
for a click that never comes), and the session's states and device news through the
window's bridge. It starts and stops conversations as the Start button does, and on
closing reports the threads the window left running.

Only the controller's loader and session builder may be swapped (to inject a fault at
the edge: a device, an allocation); everything between the window and the model is
the app's own code.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox, QWidget

from app.bench.threads_left import threads_left
from app.ui.launch import create_app
from app.ui.options import LaunchOverrides
from app.ui.widgets.banner import MessageBar

FOLDER_VARIABLES = ("DUETTO_CONFIG_DIR", "DUETTO_DATA_DIR")
THREAD_GRACE_S = 5.0  # threads still ending after the window closed get this long


@contextmanager
def user_folders(home: Path) -> Iterator[None]:
    """The app's config and data folders are `home`/config and `home`/data meanwhile."""
    old = {name: os.environ.get(name) for name in FOLDER_VARIABLES}
    os.environ["DUETTO_CONFIG_DIR"] = str(home / "config")
    os.environ["DUETTO_DATA_DIR"] = str(home / "data")
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _dialog_text(widget: QWidget) -> str:
    if isinstance(widget, QMessageBox):
        parts = [widget.text(), widget.informativeText()]
    else:
        parts = [label.text() for label in widget.findChildren(QLabel)]
    return " ".join(p for p in parts if p).strip() or widget.windowTitle()


@dataclass
class Said:
    level: str
    text: str
    at: float  # seconds since the window opened

    def __str__(self) -> str:
        return f"{self.level}: {self.text}"


class WindowRun:
    def __init__(
        self,
        home: Path,
        overrides: LaunchOverrides,
        *,
        loader: Callable[..., Any] | None = None,
        session_builder: Callable[..., Any] | None = None,
    ) -> None:
        self.home = home
        self.overrides = overrides
        self._loader = loader
        self._builder = session_builder
        self.said: list[Said] = []
        self.states: list[tuple[float, str, str]] = []  # (at, state, reason)
        self.devices: list[tuple[float, str, str, str]] = []  # (at, source, kind, message)
        self.threads_left: list[str] = []
        self.window: Any = None
        self._opened = 0.0
        self._folders: Any = None
        self._original_post: Any = None
        self._closer: QTimer | None = None

    # ------------------------------------------------------------------ open / close
    def __enter__(self) -> WindowRun:
        from app.ui.controller import ConversationController
        from app.ui.main_window import MainWindow

        self._folders = user_folders(self.home)
        self._folders.__enter__()
        try:
            self._open(ConversationController, MainWindow)
        except BaseException:
            self._restore()
            raise
        return self

    def _open(self, controller_class: Any, window_class: Any) -> None:
        self.app = create_app()
        self._opened = time.monotonic()
        self._before = set(threading.enumerate())
        original = self._original_post = MessageBar.post
        run = self

        def recording_post(bar: MessageBar, level: str, text: str) -> Any:
            run.said.append(Said(level, text, run.now))
            return original(bar, level, text)

        MessageBar.post = recording_post  # type: ignore[method-assign]
        self._closer = QTimer()
        self._closer.setInterval(100)
        self._closer.timeout.connect(self._close_dialogs)
        self._closer.start()

        def make_controller(bridge: Any) -> Any:
            kwargs: dict[str, Any] = {}
            if self._loader is not None:
                kwargs["loader"] = self._loader
            if self._builder is not None:
                kwargs["session_builder"] = self._builder
            return controller_class(bridge, **kwargs)

        self.window = window_class(self.overrides, controller=make_controller,
                                   detect_hardware=None)
        bridge = self.window.bridge
        bridge.state_changed.connect(
            lambda state, reason: self.states.append((self.now, state, reason)))
        bridge.device_event.connect(
            lambda source, kind, message: self.devices.append(
                (self.now, source, kind, message)))
        self.window.show()
        self.pump(0.2)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.window is not None:
                if self.phase in ("loading", "starting", "running"):
                    self.stop()
                self.window.close()
                self.pump(0.2)
                self.window.deleteLater()
                self.pump(0.1)
            self._wait_threads()
        finally:
            self._restore()

    def _restore(self) -> None:
        if self._closer is not None:
            self._closer.stop()
        if self._original_post is not None:
            MessageBar.post = self._original_post  # type: ignore[method-assign]
        self._folders.__exit__(None, None, None)

    def _wait_threads(self) -> None:
        self.threads_left = threads_left(self._before, THREAD_GRACE_S)

    def _close_dialogs(self) -> None:
        widget = QApplication.activeModalWidget()
        if widget is None:
            return
        self.said.append(Said("dialog", _dialog_text(widget), self.now))
        widget.close()

    # ------------------------------------------------------------------ driving
    @property
    def now(self) -> float:
        return time.monotonic() - self._opened

    @property
    def phase(self) -> str:
        return str(self.window.controller.phase)

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self.app.processEvents()
            if time.monotonic() >= end:
                return
            time.sleep(0.01)

    def wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > end:
                return False
            self.pump(0.05)
        return True

    def start(self, timeout_s: float = 60.0) -> str:
        """Press Start; returns the phase it settles in ("running", or "idle" if refused)."""
        self.window.start_conversation()
        self.pump(0.05)
        self.wait(lambda: self.phase not in ("loading", "starting"), timeout_s)
        self.pump(0.1)
        return self.phase

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Press End conversation; True once it is idle again."""
        self.window.controller.stop()
        return self.wait(lambda: self.phase == "idle", timeout_s)

    def reached(self, state: str, after: float = -1.0) -> bool:
        return any(s == state and at > after for at, s, _ in self.states)

    def wait_state(self, state: str, timeout_s: float, after: float = -1.0) -> bool:
        return self.wait(lambda: self.reached(state, after), timeout_s)

    def texts(self, *levels: str) -> list[str]:
        return [str(s) for s in self.said if not levels or s.level in levels]
