"""The main window: the camera preview with the state and live subtitles over it, the
side panel (persona, levels, latency), the controls, and a status bar with the model.

Everything slow happens elsewhere: the controller loads and starts conversations on
worker threads, the bridge brings session events here as signals, and a probe finds
the GPU in the background. Failures become messages at the top; the window stays usable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.config import personas as persona_store
from app.config import settings as settings_store
from app.config.personas import PersonaFile, PersonaLibrary
from app.config.settings import Settings
from app.flow.persona_fit import fit_persona
from app.model.contract import BackendError
from app.ui import hardware, messages
from app.ui.bridge import SessionBridge
from app.ui.controller import ConversationController
from app.ui.hardware_probe import HardwareProbe
from app.ui.messages import UserMessage
from app.ui.options import (
    LaunchOverrides,
    build_options,
    chosen_family,
    is_self_check,
)
from app.ui.slowness import SlownessWatch
from app.ui.widgets.banner import MessageBar
from app.ui.widgets.side_panel import SidePanel
from app.ui.widgets.stage import Stage
from app.ui.widgets.status_line import StatusLine

log = logging.getLogger(__name__)

SHORTCUTS = {
    "start": "Ctrl+Return",
    "mute": "M",
    "camera": "C",
    "stop_talking": "Esc",
    "push_to_talk": "Space",
    "settings": "Ctrl+,",
}

FALLBACK_PERSONA = PersonaFile(
    id="plain", name="Assistant", role_prompt="You are a helpful assistant. Answer briefly.",
    description="Used because no persona file could be read.",
)


class MainWindow(QMainWindow):
    def __init__(
        self,
        overrides: LaunchOverrides | None = None,
        *,
        controller: Callable[[SessionBridge], ConversationController] | None = None,
        detect_hardware: Callable[[], hardware.Hardware] | None = hardware.detect,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Duetto")
        self.resize(1180, 740)
        self.setMinimumSize(900, 580)
        self.overrides = overrides or LaunchOverrides()
        self.bridge = SessionBridge(self)
        self.slowness = SlownessWatch()
        # Tests pass a factory whose controller loads fakes; the app uses the real one.
        make = controller or ConversationController
        self.controller = make(self.bridge)
        self.controller.setParent(self)
        self.hardware: hardware.Hardware | None = None
        self.family_specs: dict[str, Any] = {}
        self.camera_on = True
        self._started_with_camera = True  # whether the current conversation began with it
        self.mic_muted = False
        self._ptt_held = False
        self._closed = False

        self._build()
        self._connect()
        self._load_user_files()
        self.probe = HardwareProbe(detect_hardware, self) if detect_hardware else None
        if self.probe is not None:
            self.probe.found.connect(self._on_hardware)
            self.probe.specs_ready.connect(self._on_specs)
            self.probe.start(self._families())
        self._on_phase("idle")

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        body = QWidget(self)
        outer = QVBoxLayout(body)
        outer.setContentsMargins(18, 16, 18, 12)
        outer.setSpacing(12)

        middle = QHBoxLayout()
        middle.setSpacing(16)
        left = QVBoxLayout()
        left.setSpacing(10)
        # Messages sit over the stage, the one part that can give up height; the side
        # panel keeps the whole height beside them.
        self.messages = MessageBar(body)
        left.addWidget(self.messages)
        self.stage = Stage(body)
        left.addWidget(self.stage, 1)
        self.progress_row = QWidget(body)
        row = QHBoxLayout(self.progress_row)
        row.setContentsMargins(4, 0, 0, 0)
        self.progress_label = QLabel("", self.progress_row)
        self.progress_label.setObjectName("muted")
        self.progress = QProgressBar(self.progress_row)
        self.progress.setRange(0, 1000)
        self.progress.setFixedHeight(8)
        self.cancel_button = QPushButton("Cancel", self.progress_row)
        self.cancel_button.clicked.connect(self.controller.cancel_load)
        row.addWidget(self.progress_label)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        self.progress_row.hide()
        left.addWidget(self.progress_row)
        middle.addLayout(left, 1)
        self.side = SidePanel(body)
        self.side_area = self.side.scrolling(body)
        middle.addWidget(self.side_area)
        outer.addLayout(middle, 1)

        controls = QHBoxLayout()
        controls.setSpacing(10)
        self.start_button = QPushButton("Start conversation", body)
        self.start_button.setObjectName("primary")
        self.start_button.setMinimumWidth(210)
        self.mute_button = QPushButton("Mute mic", body)
        self.mute_button.setCheckable(True)
        self.camera_button = QPushButton("Camera on", body)
        self.camera_button.setCheckable(True)
        self.stop_talking_button = QPushButton("Stop talking", body)
        self.ptt_button = QPushButton("Hold to talk", body)
        self.ptt_button.setToolTip(f"Push-to-talk: hold this or {SHORTCUTS['push_to_talk']}")
        self.settings_button = QPushButton("Settings", body)
        for button, key in (
            (self.start_button, "start"), (self.mute_button, "mute"),
            (self.camera_button, "camera"), (self.stop_talking_button, "stop_talking"),
            (self.settings_button, "settings"),
        ):
            shortcut = QKeySequence(SHORTCUTS[key]).toString(QKeySequence.SequenceFormat.NativeText)
            tip = button.toolTip() or button.text()
            button.setToolTip(f"{tip}  ({shortcut})")
            button.setCursor(Qt.CursorShape.PointingHandCursor)
        controls.addWidget(self.start_button)
        controls.addSpacing(8)
        controls.addWidget(self.mute_button)
        controls.addWidget(self.camera_button)
        controls.addWidget(self.stop_talking_button)
        controls.addWidget(self.ptt_button)
        controls.addStretch(1)
        self.hint = QLabel("", body)
        self.hint.setObjectName("muted")
        controls.addWidget(self.hint)
        controls.addSpacing(8)
        controls.addWidget(self.settings_button)
        outer.addLayout(controls)
        self.setCentralWidget(body)

        self.status = StatusLine(self.statusBar())
        self.status_model = self.status.model  # read by tests and screenshots

    def _connect(self) -> None:
        self.start_button.clicked.connect(self.toggle_conversation)
        self.mute_button.toggled.connect(self.set_mic_muted)
        # Checked means "camera off" (drawn like a muted mic).
        self.camera_button.toggled.connect(lambda checked: self.set_camera_on(not checked))
        self.stop_talking_button.clicked.connect(self.stop_talking)
        self.ptt_button.pressed.connect(lambda: self._push_to_talk(True))
        self.ptt_button.released.connect(lambda: self._push_to_talk(False))
        self.settings_button.clicked.connect(lambda: self.open_settings())
        for key, slot in (
            ("start", self.toggle_conversation),
            ("mute", lambda: self.mute_button.toggle()),
            ("camera", lambda: self.camera_button.toggle()),
            ("stop_talking", self.stop_talking),
            ("settings", self.open_settings),
        ):
            QShortcut(QKeySequence(SHORTCUTS[key]), self, activated=slot)

        bridge = self.bridge
        bridge.frame_ready.connect(self._show_frame)
        bridge.state_changed.connect(self._on_state)
        # Subtitles and the transcript show words as they are heard, not as the model
        # writes them: what it writes ahead is not yet said, and may never be (app/flow/
        # spoken.py).
        bridge.spoken.connect(self.stage.subtitles.add)
        bridge.spoken.connect(lambda *_: self.stage.relayout())
        bridge.spoken.connect(self.side.transcript.add)
        bridge.heard.connect(self.stage.subtitles.mark_heard)
        bridge.heard.connect(self.side.transcript.mark_heard)
        bridge.retracted.connect(self.stage.subtitles.take_back)
        bridge.retracted.connect(self.side.transcript.take_back)
        bridge.levels.connect(self._on_levels)
        bridge.latency.connect(self.side.set_latency)
        bridge.latency.connect(
            lambda kind, seconds: self._maybe_report(self.slowness.on_latency(kind, seconds)))
        bridge.rtf_changed.connect(self.side.set_rtf)
        bridge.rtf_changed.connect(lambda rtf: self._maybe_report(self.slowness.on_rtf(rtf)))
        bridge.unit_done.connect(self._on_unit_done)
        bridge.device_event.connect(self._on_device)
        bridge.overflow.connect(lambda text: self.report(messages.audio_lost(text)))
        bridge.error.connect(lambda text: self.report(messages.model_failed(text)))
        bridge.recording_stopped.connect(
            lambda text: self.report(messages.recording_stopped(text)))
        bridge.notice.connect(
            lambda what, seconds: self._maybe_report(messages.model_notice(what, seconds)))
        ctl = self.controller
        ctl.phase_changed.connect(self._on_phase)
        ctl.load_progress.connect(self._on_progress)
        ctl.failed.connect(self.report)
        ctl.notice.connect(lambda text: self.post("info", text))
        ctl.advice.connect(self.report)
        ctl.loaded.connect(self._on_loaded)
        ctl.started.connect(self._on_started)
        ctl.camera_changed.connect(self._on_camera_changed)
        ctl.load_released.connect(
            lambda: self.post("info", "The cancelled load has stopped; its memory is free."))

    # ------------------------------------------------------------------ user files
    def _load_user_files(self) -> None:
        loaded = settings_store.load()
        self.settings: Settings = loaded.settings
        self.settings_existed = loaded.existed
        for note in loaded.notes:
            self.post("warning", note)
        self.reload_personas()
        # A --camera given for this run means the user wants it on.
        self.camera_on = self.settings.devices.camera_on or self.overrides.camera is not None
        self._sync_camera_button()
        self._update_status()

    def reload_personas(self) -> None:
        self.library: PersonaLibrary = persona_store.load_all()
        for problem in self.library.problems:
            self.post("warning", problem.describe() + " (the other personas loaded)")
        wanted = self.overrides.persona or self.settings.persona
        if self.library.get(wanted) is None:
            # The choice is kept (the file may come back); another persona speaks meanwhile.
            self.report(messages.persona_missing(wanted, self.current_persona().name))
        self._show_persona()

    def current_persona(self) -> PersonaFile:
        wanted = self.overrides.persona or self.settings.persona
        found = self.library.get(wanted)
        if found is None and self.library.personas:
            found = self.library.personas[0]
        return found or FALLBACK_PERSONA

    def _show_persona(self) -> None:
        """The persona card names the voice the model will really speak with: the loaded
        model's, else what its family offers (a Qwen voice is not Moshi's)."""
        persona = self.current_persona()
        voice = persona.to_persona().voice
        spec = self.controller.backend_spec
        if spec is None:
            try:
                spec = self.family_specs.get(chosen_family(self.settings, self.overrides))
            except BackendError:
                spec = None
        if spec is not None:
            voice = fit_persona(persona.to_persona(), spec)[0].voice
        self.side.set_persona(persona.name, persona.description, voice.describe())

    def save_settings(self) -> bool:
        try:
            settings_store.save(self.settings)
        except OSError as exc:
            self.report(messages.settings_not_saved(exc))
            return False
        return True

    # ------------------------------------------------------------------ messages
    def post(self, level: str, text: str) -> None:
        log.info("%s: %s", level, text)
        self.messages.post(level, text[:1].upper() + text[1:])

    def _maybe_report(self, message: UserMessage | None) -> None:
        if message is not None:
            self.report(message)

    def report(self, message: UserMessage) -> None:
        """A fault or notice worded by app/ui/messages.py (what happened, what still
        works, what to do)."""
        self.post(message.level, message.text())

    # ------------------------------------------------------------------ conversation
    def toggle_conversation(self) -> None:
        phase = self.controller.phase
        if phase == "idle":
            self.start_conversation()
        elif phase in ("loading", "starting"):
            self.controller.cancel_load()
        elif phase == "running":
            self.controller.stop()

    def start_conversation(self) -> None:
        if self.controller.phase != "idle":
            return
        try:
            options = build_options(self.settings, self.current_persona(), self.overrides,
                                    camera_on=self.camera_on)
        except BackendError as exc:
            self.report(messages.start_failed(exc))
            return
        self.stage.subtitles.clear_text()
        self.side.reset_figures()
        self.slowness.reset()
        self._started_with_camera = options.camera is not None
        self._self_check = is_self_check(options.model.local_dir)
        self.stage.badge.setVisible(self._self_check)
        self.stage.relayout()
        self._update_status()
        self.controller.start(options)

    def stop_talking(self) -> None:
        if self.bridge.force_listen():
            self.hint.setText("Stopped the answer; listening")

    def set_mic_muted(self, muted: bool) -> None:
        self.mic_muted = muted
        self.mute_button.setText("Mic muted" if muted else "Mute mic")
        self._apply_mic()

    def _apply_mic(self) -> None:
        ptt = self.settings.conversation.push_to_talk
        muted = self.mic_muted or (ptt and not self._ptt_held)
        self.bridge.set_mic_muted(muted)
        self.side.mic_label.setText("You (muted)" if muted else "You")

    def _push_to_talk(self, held: bool) -> None:
        self._ptt_held = held
        self._apply_mic()

    def keyPressEvent(self, event: Any) -> None:
        if (event.key() == Qt.Key.Key_Space and not event.isAutoRepeat()
                and self.settings.conversation.push_to_talk):
            self._push_to_talk(True)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: Any) -> None:
        if (event.key() == Qt.Key.Key_Space and not event.isAutoRepeat()
                and self.settings.conversation.push_to_talk):
            self._push_to_talk(False)
            return
        super().keyReleaseEvent(event)

    def set_camera_on(self, on: bool) -> None:
        """The user switched the camera: now if a conversation runs, and from now on."""
        self.camera_on = on
        self._sync_camera_button()
        self.settings.devices.camera_on = on
        self.save_settings()
        if self.controller.phase == "running":
            self.bridge.take_frame()  # a frame from before the switch must not flash up
            self.controller.set_camera(on)  # opens it on a worker; camera_changed says
            if on:
                self.stage.clear("Waiting for the camera…")
        self._show_idle_stage()

    def _on_camera_changed(self, on: bool, error: str) -> None:
        """Where the running conversation's camera ended up after a switch."""
        if self.controller.phase != "running":
            return  # it ended meanwhile: the button keeps the user's wish for the next
        if error:
            self.report(messages.camera_not_opened(error))
        if not on and self.camera_on:  # asked for, but it is off: show it as it is
            self._show_camera_off()

    def _show_camera_off(self) -> None:
        """The running camera is off though the user wanted it: say so on the button and
        the stage. The saved choice is left on, so the next conversation tries again."""
        self.camera_on = False
        self._sync_camera_button()
        self._show_idle_stage()

    def _sync_camera_button(self) -> None:
        # Checked means "off", drawn in the alarm colour like a muted mic.
        self.camera_button.blockSignals(True)
        self.camera_button.setChecked(not self.camera_on)
        self.camera_button.blockSignals(False)
        self.camera_button.setText("Camera on" if self.camera_on else "Camera off")

    # ------------------------------------------------------------------ bridge slots
    def _show_frame(self) -> None:
        image = self.bridge.take_frame()
        if image is not None and self.camera_on:
            self.stage.set_frame(image)

    def _on_state(self, state: str, reason: str) -> None:
        self.stage.pill.set_state(state, reason)
        self.stage.relayout()
        if state == "listening" and reason in ("assistant finished", "assistant yields"):
            self.stage.subtitles.answer_finished()
        if state == "listening" and reason == "user finished":
            self.hint.setText("")

    def _on_unit_done(self, compute: float, _lag: float) -> None:
        spec = self.controller.backend_spec
        if spec is not None:
            self._maybe_report(self.slowness.on_unit(compute, spec.unit_ms / 1000))
        self.side.set_network(self.controller.network_figures())

    def _on_levels(self, mic: float, assistant: float) -> None:
        self.side.mic_meter.set_level(mic)
        self.side.assistant_meter.set_level(assistant)

    def _on_device(self, source: str, kind: str, message: str) -> None:
        if kind in ("lost", "error", "failed"):
            self.report(messages.device_lost(source, message or kind))
            if source.lower() == "camera" and self.camera_on:
                self._show_camera_off()  # switching it on again reopens it
        elif kind == "restored":  # a lost device is back (app/flow/device_keeper.py)
            self.report(messages.device_back(source, message))
            if source.lower() == "camera" and not self.camera_on:
                self.camera_on = True
                self._sync_camera_button()
                self.stage.clear("Waiting for the camera…")
        elif kind == "stopped" and message and message != "stopped":
            self.report(messages.device_note(source, message))

    # ------------------------------------------------------------------ controller slots
    def _on_phase(self, phase: str) -> None:
        running = phase == "running"
        busy = phase in ("loading", "starting")
        label = {"idle": "Start conversation", "loading": "Cancel loading",
                 "starting": "Cancel", "running": "End conversation",
                 "stopping": "Ending…"}[phase]
        self.start_button.setText(label)
        self.start_button.setProperty("running", running or busy)
        self.start_button.style().unpolish(self.start_button)
        self.start_button.style().polish(self.start_button)
        self.start_button.setEnabled(phase != "stopping")
        self.stop_talking_button.setEnabled(running)
        self.ptt_button.setVisible(self.settings.conversation.push_to_talk)
        self.ptt_button.setEnabled(running)
        self.mute_button.setEnabled(True)
        # Switched while loading, it applies once the conversation starts (_on_started).
        self.camera_button.setEnabled(phase != "stopping")
        self.settings_button.setEnabled(phase == "idle")
        self.progress_row.setVisible(busy)
        if phase == "loading":
            self.progress.setValue(0)
            self.progress_label.setText("Loading the model…")
        elif phase == "starting":
            self.progress_label.setText("Starting the conversation…")
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
        if phase in ("idle", "loading", "starting", "stopping"):
            self.stage.pill.set_state(phase)
        if phase == "idle":
            self.hint.setText("")
            self.stage.subtitles.clear_text()
            self.side.mic_meter.reset()
            self.side.assistant_meter.reset()
            self._show_idle_stage()
        self.stage.relayout()

    def _show_idle_stage(self) -> None:
        if self.controller.phase == "running" and self.camera_on:
            return
        if not self.camera_on:
            self.stage.clear("Camera off", "The assistant will hear you but not see you.")
        elif self.controller.phase == "idle":
            self.stage.clear("Ready when you are",
                             "Press Start conversation (Ctrl+Enter). Your camera preview "
                             "appears here.")

    def _on_progress(self, what: str, fraction: float) -> None:
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(fraction * 1000))
        self.progress_label.setText(what.capitalize())

    def _on_loaded(self, spec: Any) -> None:
        quant = self.overrides.quant or self.settings.model.quant
        self.status.planned_gib = (spec.vram_gib or {}).get(quant) if spec is not None else None
        self._update_status()
        self._show_persona()

    def _on_started(self) -> None:
        self._apply_mic()
        if self.camera_on != self._started_with_camera:  # switched while it loaded
            self.controller.set_camera(self.camera_on)
        if self.camera_on:
            self.stage.clear("Waiting for the camera…")
        else:
            self._show_idle_stage()
        self.hint.setText("Talk any time; interrupt it by speaking")

    # ------------------------------------------------------------------ hardware
    def _families(self) -> list[str]:
        from app.model import families

        return families.known()

    def _on_hardware(self, found: hardware.Hardware) -> None:
        self.hardware = found
        self._update_status()
        if not found.gpus and not self._no_gpu_is_known():
            self.report(messages.no_gpu(found.note))

    def _no_gpu_is_known(self) -> bool:
        """No banner about a missing GPU where the user already chose the CPU or the
        self-check, or where the first-run dialog is about to say it itself."""
        folder = self.overrides.model_dir or (
            Path(self.settings.model.local_dir) if self.settings.model.local_dir else None)
        return bool(self.settings.model.device == "cpu" or self.overrides.device
                    or is_self_check(folder) or self.needs_first_run())

    def _on_specs(self, specs: dict[str, Any]) -> None:
        self.family_specs = specs
        self._show_persona()

    def _update_status(self) -> None:
        self.status.show(self.settings, self.overrides, self.hardware)

    # ------------------------------------------------------------------ settings
    def settings_dialog(self) -> Any:
        """A settings dialog over the current settings (not shown yet)."""
        from app.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self.library, self.hardware,
                                self.family_specs, self.controller.backend_spec, self)
        if self.probe is not None:
            self.probe.deliver(dialog.set_hardware, dialog.set_specs)
        return dialog

    def open_settings(self, page: str = "", *, build_self_check: bool = False) -> None:
        if self.controller.phase != "idle":
            self.post("info", "Settings open when the conversation has ended.")
            return
        dialog = self.settings_dialog()
        if page:
            dialog.show_page(page)
        if build_self_check:
            dialog.model.build_self_check()
        accepted = dialog.exec()
        if accepted:
            self.apply_settings(dialog.result_settings())
        if dialog.personas_changed:
            self.reload_personas()
        dialog.deleteLater()

    def apply_settings(self, new: Settings) -> None:
        if new.model != self.settings.model:
            self.controller.unload()
        self.settings = new
        self.save_settings()
        self.camera_on = new.devices.camera_on
        self._sync_camera_button()
        self._show_persona()
        self._update_status()
        self._on_phase(self.controller.phase)

    # ------------------------------------------------------------------ first run
    def needs_first_run(self) -> bool:
        return (not self.settings.first_run_done and not self.settings.model.configured
                and self.overrides.model_dir is None)

    def open_first_run(self) -> None:
        from app.ui.first_run import FirstRunDialog

        dialog = FirstRunDialog(self.hardware, self)
        if self.probe is not None:
            self.probe.deliver(dialog.set_hardware)
        dialog.exec()
        choice = dialog.choice
        self.settings.first_run_done = True
        if choice is not None:
            choice.apply(self.settings)
            if choice.open_model_page:
                self.save_settings()
                self.open_settings("model", build_self_check=choice.self_check)
                return
        self.save_settings()
        self._update_status()

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._closed:
            self._closed = True
            self.status.stop()
            self.stage.pill.set_state("stopping")
            if not self.controller.shutdown():
                log.warning("a worker thread was still running at exit")
            if self.probe is not None:
                self.probe.join(10.0)
        super().closeEvent(event)
