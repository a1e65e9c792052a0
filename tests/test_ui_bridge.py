"""The bridge: session events from other threads become signals on the Qt main thread;
preview frames keep only the newest."""

from __future__ import annotations

import threading

import numpy as np
from PySide6.QtCore import QThread
from PySide6.QtWidgets import QApplication

from app.flow.events import EventHub, EventKind
from app.ui.bridge import SessionBridge, printable, to_qimage


class _Session:
    def __init__(self) -> None:
        self.events = EventHub()
        self.muted = None
        self.listens = 0

    def subscribe(self, subscriber):
        return self.events.subscribe(subscriber)

    def force_listen(self):
        self.listens += 1

    def set_mic_muted(self, muted):
        self.muted = muted


def test_events_from_a_session_thread_arrive_on_the_main_thread(qtbot):
    bridge = SessionBridge()
    session = _Session()
    bridge.attach(session)
    got: list[tuple] = []
    main = QThread.currentThread()

    def record(*args):
        got.append((args, QThread.currentThread() is main))

    bridge.state_changed.connect(record)
    bridge.text_added.connect(record)
    bridge.levels.connect(record)
    bridge.latency.connect(record)

    def emit():
        session.events.emit(EventKind.STATE, 0.1, state="speaking", reason="assistant speaks")
        session.events.emit(EventKind.TEXT, 0.2, text="Hel\x15lo", response=3)
        session.events.emit(EventKind.LEVELS, 0.3, mic=-20.0, assistant=-12.5)
        session.events.emit(EventKind.LATENCY, 0.4, kind="turn_taking", seconds=0.42)

    worker = threading.Thread(target=emit)
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: len(got) == 4, timeout=2000)
    assert [args for args, _ in got] == [
        ("speaking", "assistant speaks"), ("Hello", 3), (-20.0, -12.5), ("turn_taking", 0.42)]
    assert all(on_main for _, on_main in got)


def test_controls_reach_the_session_and_detach_stops_events(qtbot):
    bridge = SessionBridge()
    assert not bridge.force_listen()  # nothing attached: nothing happens
    session = _Session()
    bridge.attach(session)
    assert bridge.force_listen() and session.listens == 1
    assert bridge.set_mic_muted(True) and session.muted is True
    bridge.detach()
    got = []
    bridge.error.connect(got.append)
    session.events.emit(EventKind.ERROR, 0.0, message="late")
    QApplication.processEvents()
    assert got == [] and not bridge.attached


def test_preview_keeps_only_the_newest_frame(qtbot):
    bridge = SessionBridge()
    wakes = []
    bridge.frame_ready.connect(lambda: wakes.append(1))
    for value in (10, 20, 30):
        frame = np.full((4, 6, 3), value, np.uint8)
        threading.Thread(target=bridge.on_preview, args=(frame,)).start()
        qtbot.wait(5)
    qtbot.waitUntil(lambda: bridge.frames_seen == 3, timeout=2000)
    image = bridge.take_frame()
    assert image is not None and image.width() == 6 and image.height() == 4
    assert image.pixelColor(0, 0).red() == 30
    assert bridge.take_frame() is None  # taken: nothing waits any more
    assert 1 <= len(wakes) <= 3


def test_qimage_is_a_copy_with_rgb_order():
    frame = np.zeros((2, 3, 3), np.uint8)
    frame[..., 0] = 200  # red
    image = to_qimage(frame[:, ::-1])  # a mirrored (non-contiguous) view
    frame[...] = 0
    color = image.pixelColor(1, 1)
    assert (color.red(), color.green(), color.blue()) == (200, 0, 0)


def test_printable_drops_control_characters():
    assert printable("a\x00b\x1cc\ufffd d\n") == "abc d\n"


def test_real_time_factor_comes_from_the_sessions_metrics_summary(qtbot):
    bridge = SessionBridge()
    session = _Session()
    bridge.attach(session)
    got = []
    bridge.rtf_changed.connect(got.append)
    session.events.emit(EventKind.LEVELS, 0.1, mic=-50.0, assistant=-120.0)
    # Before any speech the summary has no figure: nothing is shown.
    session.events.emit(EventKind.METRICS, 0.2, summary={"real_time_factor": None})
    session.events.emit(EventKind.METRICS, 3.0, summary={"real_time_factor": 0.8})
    session.events.emit(EventKind.METRICS, 6.0, summary={"real_time_factor": 0.65})
    session.events.emit(EventKind.ENDED, 9.0, reason="stopped",
                        metrics={"real_time_factor": 0.7})
    qtbot.waitUntil(lambda: len(got) == 3, timeout=2000)
    assert got == [0.8, 0.65, 0.7]


def test_the_side_panel_shows_the_real_time_factor_and_which_delay(qtbot):
    from app.ui.widgets.side_panel import SidePanel

    panel = SidePanel()
    qtbot.addWidget(panel)
    assert panel.rtf_value.text() == "—"
    panel.set_rtf(0.42)
    assert panel.rtf_value.text() == "0.42×"
    panel.set_latency("response_after_interruption", 0.9)
    assert panel.turn_value.text() == "900 ms"
    assert "after you interrupted" in panel.turn_value.toolTip()
    panel.set_latency("turn_taking", 0.75)
    assert "after you interrupted" not in panel.turn_value.toolTip()
    panel.reset_figures()
    assert panel.rtf_value.text() == "—"


def test_subtitles_wrap_long_runs_and_keep_the_tail():
    from app.ui.widgets.subtitles import ZERO_WIDTH_SPACE, breakable, tail

    assert breakable("short words stay") == "short words stay"
    broken = breakable("x" * 60, 28)
    assert broken.replace(ZERO_WIDTH_SPACE, "") == "x" * 60
    assert broken.count(ZERO_WIDTH_SPACE) == 2
    text = " ".join(f"word{i}" for i in range(100))
    cut = tail(text, 50)
    assert cut.startswith("…word") and cut.endswith("word99") and len(cut) <= 51


def test_a_recording_that_stops_is_shown_and_one_that_starts_is_not(qtbot):
    bridge = SessionBridge()
    session = _Session()
    bridge.attach(session)
    shown: list[str] = []
    bridge.recording_stopped.connect(shown.append)
    session.events.emit(EventKind.RECORDING, 0.0, recording=True, message="", folder="/r")
    session.events.emit(EventKind.RECORDING, 5.0, recording=False,
                        message="Recording stopped: the disk is full (/r). The conversation "
                                "goes on without recording", folder="/r")
    qtbot.waitUntil(lambda: len(shown) == 1)
    QApplication.processEvents()
    assert shown == ["Recording stopped: the disk is full (/r). The conversation goes on "
                     "without recording"]
