"""The main window with a fake model: events drive the widgets, personas reach the next
session, failures show and leave the window usable, nothing outlives the window."""

from __future__ import annotations

import itertools
import json
import threading
import time

import numpy as np
import pytest
import test_ui_fakes as fakes

from app.config import settings as settings_store
from app.flow.events import EventKind
from app.ui import theme
from app.ui.main_window import MainWindow
from app.ui.options import LaunchOverrides


@pytest.fixture
def harness():
    return fakes.Harness()


@pytest.fixture
def window(qtbot, harness, tmp_path):
    win = MainWindow(LaunchOverrides(model_dir=tmp_path / "model"),
                     controller=harness.controller, detect_hardware=None)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def _running(qtbot, window):
    window.start_conversation()
    qtbot.waitUntil(lambda: window.controller.phase == "running", timeout=5000)


def _duetto_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("duetto-") and t.is_alive()]


def test_start_and_stop_a_conversation(qtbot, window, harness):
    assert window.start_button.text() == "Start conversation"
    assert not window.stop_talking_button.isEnabled()
    _running(qtbot, window)
    assert window.start_button.text() == "End conversation"
    assert window.stop_talking_button.isEnabled()
    assert not window.settings_button.isEnabled()
    session = harness.sessions[0]
    assert session.started.is_set()
    qtbot.waitUntil(lambda: window.stage.pill.state == "listening", timeout=2000)
    window.stop_talking()
    assert session.force_listens == 1
    window.mute_button.click()
    assert session.muted[-1] is True and window.side.mic_label.text() == "You (muted)"
    window.toggle_conversation()
    qtbot.waitUntil(lambda: window.controller.phase == "idle", timeout=5000)
    assert session.stopped.is_set()
    assert window.start_button.text() == "Start conversation"
    # The loaded model is kept for the next conversation.
    _running(qtbot, window)
    assert harness.loads == 1 and len(harness.sessions) == 2


def test_session_events_update_state_subtitles_meters_and_latency(qtbot, window, harness):
    _running(qtbot, window)
    hub = harness.sessions[0].events

    def emit():
        hub.emit(EventKind.STATE, 1.0, state="responding", reason="end of user turn")
        # Written by the model, then heard: only what is heard becomes subtitles.
        hub.emit(EventKind.TEXT, 1.05, text="Chop the onion first. Then the garlic.",
                 response=1)
        hub.emit(EventKind.SPOKEN, 1.1, text="Chop the ", response=1)
        hub.emit(EventKind.SPOKEN, 1.2, text="onion first.", response=1)
        hub.emit(EventKind.LEVELS, 1.3, mic=-18.0, assistant=-9.0)
        hub.emit(EventKind.LATENCY, 1.4, kind="turn_taking", seconds=0.35)
        hub.emit(EventKind.STATE, 1.5, state="speaking", reason="assistant speaks")

    threading.Thread(target=emit).start()
    qtbot.waitUntil(lambda: window.stage.pill.state == "speaking", timeout=2000)
    assert window.stage.pill.label == "Speaking"
    assert window.stage.subtitles.text() == "Chop the onion first."
    assert window.stage.subtitles.isVisible()
    assert window.side.mic_meter.level_db == -18.0
    assert window.side.assistant_meter.level_db == -9.0
    assert window.side.turn_value.text() == "350 ms"
    assert "onion" in window.side.transcript.text()

    hub.emit(EventKind.STATE, 2.0, state="interrupted", reason="user barged in")
    hub.emit(EventKind.HEARD, 2.0, text="Chop the", response=1)
    qtbot.waitUntil(lambda: window.stage.pill.state == "interrupted", timeout=2000)
    assert window.stage.pill.label == "Interrupted"
    assert window.stage.subtitles.text() == "Chop the —"
    assert "you interrupted" in window.side.transcript.text()
    hub.emit(EventKind.SPOKEN, 3.0, text="Sure.", response=2)  # a new answer: a fresh line
    qtbot.waitUntil(lambda: window.stage.subtitles.text() == "Sure.", timeout=2000)


def test_preview_frames_are_drawn_from_the_camera_thread(qtbot, window, harness):
    _running(qtbot, window)
    preview = harness.sessions[0].preview
    frame = np.zeros((90, 160, 3), np.uint8)
    frame[..., 1] = 255
    threading.Thread(target=preview, args=(frame,)).start()
    qtbot.waitUntil(lambda: window.stage.has_frame, timeout=2000)
    assert window.stage.frames_shown == 1


def test_a_failed_load_shows_the_error_and_the_window_stays_usable(qtbot, window, harness):
    harness.fail_with = fakes.failing("the folder has no config.json")
    window.start_conversation()
    qtbot.waitUntil(lambda: any("config.json" in t for t in window.messages.texts()),
                    timeout=5000)
    assert window.controller.phase == "idle"
    assert window.start_button.isEnabled() and window.settings_button.isEnabled()
    assert "pick a model folder" in window.messages.texts()[-1].lower()  # the hint is shown
    harness.fail_with = None
    _running(qtbot, window)  # the next try works
    assert harness.loads == 2


def test_out_of_memory_is_explained(qtbot, window, harness):
    class OutOfMemoryError(RuntimeError):
        pass

    harness.fail_with = OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    window.start_conversation()
    qtbot.waitUntil(lambda: any("out of GPU memory" in t for t in window.messages.texts()),
                    timeout=5000)
    assert window.controller.phase == "idle"


def test_loading_can_be_cancelled_and_closing_leaves_no_thread(qtbot, harness, tmp_path):
    win = MainWindow(LaunchOverrides(model_dir=tmp_path), controller=harness.controller,
                     detect_hardware=None)
    qtbot.addWidget(win)
    win.show()
    harness.block.clear()  # the load hangs until released
    win.start_conversation()
    qtbot.waitUntil(lambda: win.progress_row.isVisible(), timeout=2000)
    assert win.start_button.text() == "Cancel loading"
    win.cancel_button.click()
    assert win.controller.phase == "idle"  # at once, while the worker still waits
    assert any(t.startswith("Loading cancelled") for t in win.messages.texts())
    harness.block.set()
    win.close()
    assert _duetto_threads() == []
    assert harness.sessions == []  # the cancelled load never started a session
    assert all(b.closed for b in harness.backends)


def test_closing_during_a_conversation_stops_it(qtbot, harness, tmp_path):
    win = MainWindow(LaunchOverrides(model_dir=tmp_path), controller=harness.controller,
                     detect_hardware=None)
    qtbot.addWidget(win)
    win.show()
    _running(qtbot, win)
    win.close()
    assert harness.sessions[0].stopped.is_set()
    assert harness.backends[0].closed
    assert _duetto_threads() == []


def test_a_session_error_and_a_lost_device_are_shown(qtbot, window, harness):
    _running(qtbot, window)
    hub = harness.sessions[0].events
    hub.emit(EventKind.ERROR, 1.0, message="the model failed: boom")
    hub.emit(EventKind.DEVICE, 1.0, source="camera", kind="lost", message="no frame for 2 s")
    qtbot.waitUntil(lambda: len(window.messages.texts()) == 2, timeout=2000)
    texts = " ".join(window.messages.texts())
    assert "boom" in texts and "The camera stopped working: no frame for 2 s" in texts
    assert "goes on without it" in texts  # what still works
    assert window.controller.phase == "running"  # the conversation goes on
    # The lost camera shows as off; switching it on again is how to reopen it.
    assert window.camera_button.text() == "Camera off"
    assert window.camera_button.isChecked()


def test_a_session_that_ends_by_itself_returns_to_idle(qtbot, window, harness):
    _running(qtbot, window)
    harness.sessions[0].stop("listening failed")
    qtbot.waitUntil(lambda: window.controller.phase == "idle", timeout=3000)
    assert window.start_button.text() == "Start conversation"


def test_choosing_a_persona_changes_the_next_sessions_prompt_and_voice(qtbot, window,
                                                                         harness):
    _running(qtbot, window)
    first = harness.sessions[0].options.persona
    window.toggle_conversation()
    qtbot.waitUntil(lambda: window.controller.phase == "idle", timeout=5000)

    dialog = window.settings_dialog()
    qtbot.addWidget(dialog)
    page = dialog.personas
    rows = [page.list.item(i).data(256) for i in range(page.list.count())]
    page.list.setCurrentRow(rows.index("interviewer"))
    page.use_current()
    dialog.accept()
    window.apply_settings(dialog.result_settings())
    assert settings_store.load().settings.persona == "interviewer"
    assert window.side.persona_name.text() == "Job interviewer"

    _running(qtbot, window)
    second = harness.sessions[1].options.persona
    assert second.name == "Job interviewer" != first.name
    assert "hiring manager" in second.role_prompt
    assert second.voice.builtin == "Ethan"
    assert first.voice.builtin == "Chelsie"


def test_a_corrupt_settings_file_is_reported_in_the_window(qtbot, harness, tmp_path):
    path = settings_store.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    win = MainWindow(controller=harness.controller, detect_hardware=None)
    qtbot.addWidget(win)
    assert any("damaged" in t for t in win.messages.texts())
    assert win.settings == settings_store.Settings()
    assert list(path.parent.glob("settings.json.corrupt-*"))
    win.close()


def test_a_broken_persona_file_is_reported_and_the_others_load(qtbot, harness):
    from app.config import personas

    folder = personas.user_dir()
    folder.mkdir(parents=True)
    (folder / "mine.json").write_text("{", encoding="utf-8")
    (folder / "coach.json").write_text(json.dumps({"name": "Coach", "role_prompt": "Coach."}))
    win = MainWindow(controller=harness.controller, detect_hardware=None)
    qtbot.addWidget(win)
    assert any("mine.json" in t for t in win.messages.texts())
    assert win.library.get("coach") is not None
    assert len(win.library.personas) >= 7
    win.close()


def test_a_chosen_persona_whose_file_is_gone_is_said_and_the_choice_kept(qtbot, harness):
    chosen = settings_store.Settings(persona="my-old-helper")
    settings_store.save(chosen)
    win = MainWindow(controller=harness.controller, detect_hardware=None)
    qtbot.addWidget(win)
    said = [t for t in win.messages.texts() if "my-old-helper" in t]
    assert said and "speaks instead" in said[0]
    assert win.current_persona().id != "my-old-helper"  # another one speaks meanwhile
    assert settings_store.load().settings.persona == "my-old-helper"  # nothing lost
    win.close()


def test_no_model_yet_asks_for_first_run_and_start_says_what_to_do(qtbot, harness):
    win = MainWindow(controller=harness.controller, detect_hardware=None)
    qtbot.addWidget(win)
    assert win.needs_first_run()
    win.start_conversation()
    assert any("no model" in t for t in win.messages.texts())
    assert win.controller.phase == "idle" and harness.loads == 0
    win.close()


def test_no_gpu_banner_above_the_first_run_dialog(qtbot, harness):
    """The first-run dialog says there is no GPU and what to do; a banner saying it again
    behind the dialog is stale by the time the user closes it."""
    from app.ui import hardware

    win = MainWindow(controller=harness.controller,
                     detect_hardware=lambda: hardware.Hardware((), "no CUDA GPU found"))
    qtbot.addWidget(win)
    assert win.needs_first_run()
    qtbot.waitUntil(lambda: win.hardware is not None, timeout=5000)
    win.probe.join(30)
    assert not any("GPU" in t for t in win.messages.texts())
    win.close()


def test_push_to_talk_opens_the_mic_only_while_held(qtbot, window, harness):
    window.settings.conversation.push_to_talk = True
    _running(qtbot, window)
    session = harness.sessions[0]
    assert window.ptt_button.isVisible()
    assert session.muted[-1] is True
    window.ptt_button.pressed.emit()
    assert session.muted[-1] is False
    window.ptt_button.released.emit()
    assert session.muted[-1] is True


def test_keyboard_shortcuts_exist_for_every_control(window):
    from PySide6.QtGui import QShortcut

    keys = {s.key().toString() for s in window.findChildren(QShortcut)}
    assert {"Ctrl+Return", "M", "C", "Esc", "Ctrl+,"} <= keys


def test_camera_button_turns_the_camera_off_for_the_next_conversation(qtbot, window, harness):
    assert window.camera_on and window.camera_button.text() == "Camera on"
    assert not settings_store.settings_path().exists()  # opening the window writes nothing
    window.camera_button.click()
    assert not window.camera_on and window.camera_button.text() == "Camera off"
    assert settings_store.load().settings.devices.camera_on is False
    _running(qtbot, window)
    assert harness.sessions[0].options.camera is None
    assert harness.sessions[0].options.standby_camera == 0  # can be switched on mid-way
    window.toggle_conversation()
    qtbot.waitUntil(lambda: window.controller.phase == "idle", timeout=5000)
    window.camera_button.click()
    _running(qtbot, window)
    assert harness.sessions[1].options.camera == 0


def test_first_run_choice_is_saved(qtbot, harness, monkeypatch, tmp_path):
    from app.ui import first_run

    def choose_folder(dialog):
        dialog.choice = first_run.FirstRunChoice(local_dir=str(tmp_path / "qwen"))
        return 1

    monkeypatch.setattr(first_run.FirstRunDialog, "exec", choose_folder)
    win = MainWindow(controller=harness.controller, detect_hardware=None)
    qtbot.addWidget(win)
    assert win.needs_first_run()
    win.open_first_run()
    saved = settings_store.load().settings
    assert saved.first_run_done and saved.model.local_dir == str(tmp_path / "qwen")
    assert not win.needs_first_run()
    assert win.status_model.text() == "Model: qwen"
    win.close()


def _main_thread_busy_for(qtbot, seconds: float) -> float:
    """How long the main thread was stuck: the largest gap between timer ticks."""
    from PySide6.QtCore import QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    qtbot.wait(int(seconds * 1000))
    timer.stop()
    return max(b - a for a, b in itertools.pairwise(ticks))


def test_the_camera_switches_on_and_off_mid_conversation(qtbot, window, harness):
    window.camera_button.click()  # off before starting
    _running(qtbot, window)
    session = harness.sessions[0]
    assert window.camera_button.isEnabled() and window.stage.placeholder == "Camera off"

    window.camera_button.click()  # on, mid-conversation
    assert window.camera_on and window.camera_button.text() == "Camera on"
    qtbot.waitUntil(lambda: session.camera_on, timeout=3000)
    assert session.camera_calls == [(True, "duetto-camera")]  # opened off the GUI thread
    assert window.stage.placeholder == "Waiting for the camera…"
    frame = np.zeros((90, 160, 3), np.uint8)
    threading.Thread(target=session.preview, args=(frame,)).start()
    qtbot.waitUntil(lambda: window.stage.has_frame, timeout=2000)

    window.camera_button.click()  # off again: the preview goes, the camera is released
    qtbot.waitUntil(lambda: not session.camera_on, timeout=3000)
    assert not window.stage.has_frame and window.stage.placeholder == "Camera off"
    shown = window.stage.frames_shown
    session.preview(frame)  # a late frame from the closing camera is not drawn
    qtbot.wait(100)
    assert window.stage.frames_shown == shown and not window.stage.has_frame
    assert window.controller.phase == "running"
    assert settings_store.load().settings.devices.camera_on is False


def test_opening_a_slow_camera_leaves_the_window_responsive(qtbot, window, harness):
    window.camera_button.click()
    _running(qtbot, window)
    session = harness.sessions[0]
    session.camera_gate.clear()  # the camera takes its time to open (up to 10 s here)
    clicked = time.monotonic()
    window.camera_button.click()
    assert time.monotonic() - clicked < 1.0
    assert _main_thread_busy_for(qtbot, 0.6) < 1.0  # events keep flowing meanwhile
    assert window.stage.placeholder == "Waiting for the camera…"
    # Switched off and on again while it opens: the newest wish wins, no second open.
    window.camera_button.click()
    window.camera_button.click()
    session.camera_gate.set()
    qtbot.waitUntil(lambda: not window.controller.switching_camera, timeout=3000)
    assert session.camera_on and window.camera_on
    assert [asked for asked, _ in session.camera_calls] == [True]


def test_a_camera_that_fails_mid_conversation_is_reported_and_the_talk_goes_on(
        qtbot, window, harness):
    from app.capture.base import CaptureError

    window.camera_button.click()
    _running(qtbot, window)
    session = harness.sessions[0]
    session.camera_error = CaptureError("camera #0 could not be opened (not connected, "
                                        "or in use?)")
    window.camera_button.click()
    qtbot.waitUntil(lambda: any("could not start" in t for t in window.messages.texts()),
                    timeout=3000)
    text = window.messages.texts()[-1]
    assert "camera #0 could not be opened" in text and "goes on without it" in text
    assert not window.camera_on and window.camera_button.text() == "Camera off"
    assert window.stage.placeholder == "Camera off"
    assert window.controller.phase == "running" and not session.stopped.is_set()
    session.camera_error = None  # plugged in: the next try works
    window.camera_button.click()
    qtbot.waitUntil(lambda: session.camera_on, timeout=3000)


def test_the_camera_switched_while_loading_applies_when_it_starts(qtbot, window, harness):
    harness.block.clear()
    window.start_conversation()  # camera on
    qtbot.waitUntil(lambda: window.controller.phase == "loading", timeout=2000)
    assert window.camera_button.isEnabled()
    window.camera_button.click()  # off while the model loads
    harness.block.set()
    qtbot.waitUntil(lambda: window.controller.phase == "running", timeout=5000)
    session = harness.sessions[0]
    qtbot.waitUntil(lambda: not session.camera_on, timeout=3000)
    assert window.stage.placeholder == "Camera off"


def test_a_new_load_after_a_cancel_waits_for_the_old_one_to_let_go(qtbot, harness, tmp_path,
                                                                   monkeypatch):
    from app.ui import controller as controller_module

    released = []
    monkeypatch.setattr(controller_module, "release_memory", lambda: released.append(1))
    win = MainWindow(LaunchOverrides(model_dir=tmp_path), controller=harness.controller,
                     detect_hardware=None)
    qtbot.addWidget(win)
    win.show()
    harness.block.clear()  # loading hangs: the backend is reading weights
    win.start_conversation()
    qtbot.waitUntil(lambda: harness.loading == 1, timeout=2000)
    win.cancel_button.click()
    assert win.controller.phase == "idle"
    said = win.messages.texts()[-1]
    assert "stops loading at its next step" in said and "start again now" in said
    assert win.controller.loading_in_background

    win.start_conversation()  # at once: accepted, and shown as waiting for the old load
    assert win.controller.phase == "loading"
    qtbot.waitUntil(lambda: "cancelled load" in win.progress_label.text(), timeout=2000)
    qtbot.wait(200)
    assert harness.loads == 1  # the new load has not begun beside the old one

    harness.block.set()  # the old load reaches its next step, stops and lets go
    qtbot.waitUntil(lambda: win.controller.phase == "running", timeout=5000)
    assert harness.most_loading == 1 and harness.loads == 2
    assert released, "the cancelled load's memory was not handed back"
    assert any("its memory is free" in t for t in win.messages.texts())
    assert not win.controller.loading_in_background
    win.close()
    assert _duetto_threads() == []


def test_cancelling_after_the_model_loaded_keeps_it(qtbot, window, harness):
    harness_build = harness.build
    gate = threading.Event()

    def slow_build(*args, **kwargs):
        gate.wait(5)
        return harness_build(*args, **kwargs)

    harness.build = slow_build
    window.controller._build = slow_build
    window.start_conversation()
    qtbot.waitUntil(lambda: window.controller.backend_spec is not None, timeout=3000)
    window.controller.cancel_load()
    assert "stays loaded" in window.messages.texts()[-1]
    gate.set()
    qtbot.waitUntil(lambda: not window.controller.alive_threads(), timeout=3000)
    assert not harness.backends[0].closed
    _running(qtbot, window)
    assert harness.loads == 1  # the loaded model was used, not loaded again


def test_only_words_that_were_heard_become_subtitles(qtbot, window, harness):
    """On a slow machine the model writes far ahead of its speech, and some of what it
    writes is never spoken (an answer retracted, cut, or whose voice ended first). The
    subtitles showed all of it; now they show only what started to play."""
    _running(qtbot, window)
    hub = harness.sessions[0].events
    hub.emit(EventKind.TEXT, 1.0, text="Sure, here is", response=None)  # prepared early
    hub.emit(EventKind.PREPARED, 1.2, retracted=True, response=1)  # the user went on
    hub.emit(EventKind.TEXT, 2.0, text="Pasta it is. And then a long list of words "
                                      "that the voice never reached.", response=2)
    hub.emit(EventKind.SPOKEN, 2.5, text="Pasta it is.", response=2)
    qtbot.waitUntil(lambda: window.stage.subtitles.text() == "Pasta it is.", timeout=2000)
    qtbot.wait(50)
    assert window.stage.subtitles.text() == "Pasta it is."
    transcript = window.side.transcript.text()
    assert "Pasta it is." in transcript
    assert "Sure" not in transcript and "never reached" not in transcript
    hub.emit(EventKind.PREPARED, 3.5, retracted=True, response=None)  # a later one
    qtbot.wait(50)
    assert window.stage.subtitles.text() == "Pasta it is."  # a heard answer stays


def test_two_stacked_banners_leave_the_side_panel_intact(qtbot, window):
    """Two long banners once squeezed the side panel's cards until their text was cut.
    Now no card is ever below its minimum height; at the usual size nothing even scrolls."""
    from PySide6.QtWidgets import QFrame

    window.post("error", "The conversation could not start: Duetto may not write to "
                         "/home/someone/.local/share/duetto/recordings/20261128. Nothing was "
                         "lost and the window stays usable. Choose another folder in Settings "
                         "→ Conversation, or make that one writable.")
    window.post("error", "The camera stopped working: no frame for 2 s. The conversation goes "
                         "on without it (the assistant hears you but no longer sees you). "
                         "Switch the camera on again to retry, or check it in Settings → "
                         "Devices.")
    window.side.transcript.add("Chop the onion first, then warm the oil in a wide pan. " * 3, 1)
    window.side.transcript.add("A little basil at the end.", 2)
    assert len(window.messages.texts()) == 2
    cards = [c for c in window.side.findChildren(QFrame) if c.objectName() == "card"]
    assert len(cards) == 4
    for size in ((900, 580), (1180, 740)):  # the smallest size allowed, then the usual one
        window.resize(*size)
        qtbot.waitUntil(lambda s=size: window.width() == s[0] and window.height() == s[1])
        qtbot.wait(50)
        for card in cards:
            assert card.height() >= card.minimumSizeHint().height(), (size, card.height())
            assert card.width() >= 280
        if size == (1180, 740):  # all of it in view, no scrolling needed
            bottom = max(c.geometry().bottom() for c in cards)
            assert bottom <= window.side_area.viewport().height()
    for banner in window.messages.messages():  # the banners themselves are whole
        assert banner.height() >= banner.minimumSizeHint().height()


def test_the_persona_card_names_the_voice_the_model_speaks_with(qtbot, harness, tmp_path,
                                                                monkeypatch):
    """A Qwen voice on the card while Moshi speaks was wrong: the card shows what the
    chosen family offers, then what the loaded model really uses."""
    import dataclasses

    from test_ui_fakes import SPEC

    folder = tmp_path / "moshi"
    folder.mkdir()
    config = {"model_type": "moshi", "architectures": ["MoshiForConditionalGeneration"]}
    (folder / "config.json").write_text(json.dumps(config))
    moshi_before_load = dataclasses.replace(SPEC, family="moshi", voices=())
    moshi_loaded = dataclasses.replace(SPEC, family="moshi", voices=("NATF0", "NATM1"))
    win = MainWindow(LaunchOverrides(model_dir=folder, persona="cooking-helper"),
                     controller=harness.controller, detect_hardware=None)
    qtbot.addWidget(win)
    assert win.current_persona().builtin_voice  # this persona asks for a Qwen voice
    qwen_voice = win.current_persona().builtin_voice
    win._on_specs({"qwen2.5-omni": SPEC, "moshi": moshi_before_load})
    assert qwen_voice not in win.side.persona_voice.text()
    assert win.side.persona_voice.text() == "Voice: the model's default voice"
    monkeypatch.setattr(fakes, "SPEC", moshi_loaded)  # what the fake loads from now on
    _running(qtbot, win)
    assert win.side.persona_voice.text() == "Voice: built-in voice 'NATF0'"
    win.close()


def test_a_machine_too_slow_for_the_model_is_told_so_in_words(qtbot, window, harness):
    """The self-check on a 2-core CPU showed an orange "17.12×" and nothing else."""
    _running(qtbot, window)
    hub = harness.sessions[0].events
    hub.emit(EventKind.METRICS, 5.0, summary={"real_time_factor": 34.0})  # warming up
    qtbot.waitUntil(lambda: window.side.rtf_value.text() == "34.00×", timeout=2000)
    assert not window.messages.texts()  # the first answer alone is not judged
    hub.emit(EventKind.METRICS, 7.0, summary={"real_time_factor": 17.12})
    qtbot.waitUntil(lambda: window.side.rtf_value.text() == "17.12×", timeout=2000)
    texts = window.messages.texts()
    assert any("cannot keep up" in t and "1 s of the assistant's speech in 17 s" in t
               for t in texts)
    assert window.side.rtf_note.isVisible() and "17.1 s" in window.side.rtf_note.text()
    assert "seconds this machine takes to compute one second" in window.side.rtf_value.toolTip()
    hub.emit(EventKind.METRICS, 9.0, summary={"real_time_factor": 16.0})  # said once
    qtbot.wait(100)
    assert sum("cannot keep up" in t for t in window.messages.texts()) == 1


def test_a_machine_that_keeps_up_is_not_warned(qtbot, window, harness):
    _running(qtbot, window)
    hub = harness.sessions[0].events
    hub.emit(EventKind.METRICS, 5.0, summary={"real_time_factor": 0.4})
    for i in range(8):  # a unit of 1 s taken in within 0.2 s
        hub.emit(EventKind.UNIT, float(i), index=i, compute=0.2, lag=6.0, frames=1)
    qtbot.waitUntil(lambda: window.side.rtf_value.text() == "0.40×", timeout=2000)
    qtbot.wait(100)
    assert not any("keep up" in t for t in window.messages.texts())
    assert not window.side.rtf_note.isVisible()
    for i in range(8):  # now 1.8 s for each 1 s unit while listening
        hub.emit(EventKind.UNIT, 10.0 + i, index=10 + i, compute=1.8, lag=0.5, frames=1)
    qtbot.waitUntil(lambda: any("1.8 s to take in each second" in t
                                for t in window.messages.texts()), timeout=2000)


def test_answers_that_start_late_are_explained_in_words(qtbot, window, harness):
    """The self-check must answer within 2 s of the end of a turn, or say plainly that this
    machine cannot keep up and why."""
    _running(qtbot, window)
    hub = harness.sessions[0].events
    hub.emit(EventKind.LATENCY, 5.0, kind="turn_taking", seconds=6.0)  # warming up
    qtbot.waitUntil(lambda: "6.0" in window.side.turn_value.text(), timeout=2000)
    hub.emit(EventKind.LATENCY, 9.0, kind="stop", seconds=3.0)  # not an answer's start
    hub.emit(EventKind.LATENCY, 12.0, kind="turn_taking", seconds=1.4)
    qtbot.wait(100)
    assert not any("keep up" in t for t in window.messages.texts())
    assert "color" not in window.side.turn_value.styleSheet()
    hub.emit(EventKind.LATENCY, 30.0, kind="turn_taking", seconds=3.2)  # median 2.3 s
    qtbot.waitUntil(lambda: "3.20" in window.side.turn_value.text(), timeout=2000)
    assert theme.WARNING in window.side.turn_value.styleSheet()  # the figure itself, orange
    qtbot.waitUntil(lambda: any("cannot keep up" in t and "start 2.3 s after you stop" in t
                                and "camera off" in t for t in window.messages.texts()),
                    timeout=2000)
    hub.emit(EventKind.LATENCY, 70.0, kind="turn_taking", seconds=4.0)  # said once
    qtbot.wait(100)
    assert sum("cannot keep up" in t for t in window.messages.texts()) == 1


def test_a_recording_that_stops_is_a_warning_in_its_own_words(qtbot, window, harness):
    """Not dressed as a model failure ("goes on with the next thing you say")."""
    _running(qtbot, window)
    said = ("Recording stopped: the disk is full (/r). The conversation goes on without "
            "recording; the 12.0 s recorded until then are kept.")
    harness.sessions[0].events.emit(EventKind.RECORDING, 5.0, recording=False, message=said,
                                    folder="/r")
    qtbot.waitUntil(lambda: bool(window.messages.texts()), timeout=2000)
    (banner,) = window.messages.messages()
    assert banner.level == "warning" and banner.text == said
