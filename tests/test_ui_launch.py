"""The window opens offscreen and closes cleanly."""

from __future__ import annotations

from app.ui.main_window import MainWindow


def test_main_window_opens_and_closes(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle() == "Duetto"
    assert window.statusBar().currentMessage() == "No model loaded"
    window.close()
    assert not window.isVisible()
