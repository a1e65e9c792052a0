"""Settings → Devices: camera, microphone and speaker, each with a test (a live preview,
a level meter, a test tone). Devices are listed on a task thread (probing cameras can
take seconds), and a test source runs only while its test button is on.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QPushButton,
    QWidget,
)

from app.capture import devices
from app.capture.replay import ReplayClock
from app.config.settings import Settings
from app.ui import audio_tools, theme
from app.ui.bridge import SessionBridge
from app.ui.options import device_spec
from app.ui.pages.common import note, page_layout, section, set_note
from app.ui.tasks import TaskGroup
from app.ui.widgets.meter import LevelMeter
from app.ui.widgets.video import VideoView

log = logging.getLogger(__name__)


def _combo_value(combo: QComboBox) -> str:
    """The chosen entry's data, or what the user typed (a file path, a name)."""
    index = combo.currentIndex()
    text = combo.currentText().strip()
    if index >= 0 and combo.itemText(index) == combo.currentText():
        return str(combo.itemData(index) or "")
    return text


def _select(combo: QComboBox, value: str) -> None:
    index = combo.findData(value)
    if index < 0 and value:
        combo.addItem(value, value)
        index = combo.count() - 1
    combo.setCurrentIndex(max(0, index))


class DevicesPage(QWidget):
    def __init__(self, settings: Settings, tasks: TaskGroup,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.tasks = tasks
        self._camera_source: Any = None
        self._mic_source: Any = None
        self._attempts: dict[str, int] = {}  # device tests started, per test (newest wins)
        self._mic_sink = audio_tools.LevelSink()
        self._preview = SessionBridge(self)
        layout = page_layout(self, "Devices", "What Duetto sees, hears and plays through. "
                                              "A file path works too: a video as the camera, "
                                              "a WAV as the microphone.")

        cam, c = section(self, "Camera")
        row = QHBoxLayout()
        self.camera = QComboBox(cam)
        self.camera.setEditable(True)
        self.camera_on = QCheckBox("On when a conversation starts", cam)
        self.camera_test = QPushButton("Preview", cam)
        self.camera_test.setCheckable(True)
        row.addWidget(self.camera, 1)
        row.addWidget(self.camera_on)
        row.addWidget(self.camera_test)
        c.addLayout(row)
        self.camera_view = VideoView(cam)
        self.camera_view.setMinimumSize(240, 135)
        self.camera_view.setMaximumHeight(180)
        self.camera_view.clear("Preview off")
        self.camera_view.hide()
        c.addWidget(self.camera_view)
        self.camera_note = note("", cam)
        c.addWidget(self.camera_note)
        layout.addWidget(cam)

        mic, m = section(self, "Microphone")
        row = QHBoxLayout()
        self.mic = QComboBox(mic)
        self.mic.setEditable(True)
        self.mic_test = QPushButton("Test", mic)
        self.mic_test.setCheckable(True)
        row.addWidget(self.mic, 1)
        row.addWidget(self.mic_test)
        m.addLayout(row)
        self.mic_meter = LevelMeter(theme.SUCCESS, mic)
        m.addWidget(self.mic_meter)
        self.mic_note = note("", mic)
        m.addWidget(self.mic_note)
        layout.addWidget(mic)

        spk, s = section(self, "Speaker")
        row = QHBoxLayout()
        self.speaker = QComboBox(spk)
        self.speaker.setEditable(True)
        self.tone = QPushButton("Play test tone", spk)
        row.addWidget(self.speaker, 1)
        row.addWidget(self.tone)
        s.addLayout(row)
        self.speaker_note = note("", spk)
        s.addWidget(self.speaker_note)
        layout.addWidget(spk)
        layout.addStretch(1)

        self._fill(None, None)
        self.camera_on.setChecked(settings.devices.camera_on)
        self.camera_test.toggled.connect(self._toggle_camera_test)
        self.mic_test.toggled.connect(self._toggle_mic_test)
        self.tone.clicked.connect(self._play_tone)
        self._preview.frame_ready.connect(self._show_preview)
        self._meter_timer = QTimer(self)
        self._meter_timer.setInterval(60)
        self._meter_timer.timeout.connect(lambda: self.mic_meter.set_level(
            self._mic_sink.level_db))
        set_note(self.camera_note, "Looking for cameras…")
        set_note(self.mic_note, "Looking for audio devices…")
        task = self.tasks.run("list-devices", lambda progress, cancel: (
            devices.list_audio_devices(), devices.list_cameras(timeout_s=2.0)))
        task.done.connect(lambda found: self._fill(*found))
        task.failed.connect(lambda msg: set_note(self.mic_note, f"Listing failed: {msg}",
                                                 "error"))
        task.start()

    # ------------------------------------------------------------------ listing
    def _fill(self, audio: devices.AudioDevices | None,
              cameras: devices.CameraList | None) -> None:
        chosen = self.settings.devices
        self.camera.clear()
        for cam in cameras.cameras if cameras else ():
            self.camera.addItem(f"Camera #{cam.index} · {cam.width}×{cam.height}",
                                str(cam.index))
        _select(self.camera, chosen.camera)
        self.mic.clear()
        self.mic.addItem("System default", "")
        for dev in audio.inputs if audio else ():
            self.mic.addItem(dev.describe() + ("  (default)" if dev.is_default else ""),
                             str(dev.index))
        _select(self.mic, chosen.mic)
        self.speaker.clear()
        self.speaker.addItem("System default", "")
        for dev in audio.outputs if audio else ():
            self.speaker.addItem(dev.describe() + ("  (default)" if dev.is_default else ""),
                                 str(dev.index))
        self.speaker.addItem("None (play nowhere)", "null")
        _select(self.speaker, chosen.speaker)
        if cameras is not None:
            set_note(self.camera_note, cameras.reason or f"{len(cameras.cameras)} camera(s) "
                     "found.", "warning" if not cameras.cameras else "muted")
        if audio is not None:
            set_note(self.mic_note, "No microphone found: " + audio.reason if not audio.inputs
                     else f"{len(audio.inputs)} input(s) found.",
                     "warning" if not audio.inputs else "muted")
            set_note(self.speaker_note, "No speaker found: " + audio.reason if not
                     audio.outputs else f"{len(audio.outputs)} output(s) found.",
                     "warning" if not audio.outputs else "muted")

    def apply_to(self, settings: Settings) -> None:
        settings.devices.camera = _combo_value(self.camera) or "0"
        settings.devices.camera_on = self.camera_on.isChecked()
        settings.devices.mic = _combo_value(self.mic)
        settings.devices.speaker = _combo_value(self.speaker)

    # ------------------------------------------------------------------ tests
    def _toggle_camera_test(self, on: bool) -> None:
        self._stop_camera()
        self.camera_view.setVisible(on)
        if not on:
            return
        from app.capture.sources import video_source

        spec = _combo_value(self.camera) or "0"

        def failed(message: str) -> None:  # no camera, a bad file: say so, stay usable
            self.camera_view.clear("No picture", message)
            set_note(self.camera_note, f"The camera could not start: {message}", "error")
            self.camera_test.blockSignals(True)
            self.camera_test.setChecked(False)
            self.camera_test.blockSignals(False)

        def started(source) -> None:
            self._camera_source = source
            set_note(self.camera_note, "Previewing (mirrored, as others see you flipped).")

        try:
            source = video_source(spec, audio_tools.LevelSink(), clock=ReplayClock(realtime=True),
                                  loop=True, preview=self._preview.on_preview)
        except Exception as exc:
            failed(str(exc))
            return
        self.camera_view.clear("Waiting for the camera…")
        self._start_in_background("camera-test", source, self.camera_test, started, failed)

    def _show_preview(self) -> None:
        image = self._preview.take_frame()
        if image is not None and self._camera_source is not None:
            self.camera_view.set_frame(image)

    def _stop_camera(self) -> None:
        source, self._camera_source = self._camera_source, None
        if source is not None:
            try:
                source.stop()
            except Exception:
                log.exception("stopping the camera preview failed")

    def _toggle_mic_test(self, on: bool) -> None:
        self._stop_mic()
        if not on:
            return
        from app.capture.sources import audio_source

        spec = device_spec(_combo_value(self.mic))
        self._mic_sink = audio_tools.LevelSink()

        def failed(message: str) -> None:
            set_note(self.mic_note, f"The microphone could not start: {message}", "error")
            self.mic_test.blockSignals(True)
            self.mic_test.setChecked(False)
            self.mic_test.blockSignals(False)

        def started(source) -> None:
            self._mic_source = source
            self._meter_timer.start()
            set_note(self.mic_note, "Speak: the bar should move with your voice.")

        try:
            source = audio_source(spec, self._mic_sink, clock=ReplayClock(realtime=True),
                                  loop=True)
        except Exception as exc:
            failed(str(exc))
            return
        self._start_in_background("mic-test", source, self.mic_test, started, failed)

    def _start_in_background(self, name: str, source, button, started, failed) -> None:
        """Open a device off the GUI thread: a camera can take seconds to open.

        If the user has switched the test off (or on again) by the time it opened, the
        source is not wanted any more and is stopped.
        """
        self._attempts[name] = attempt = self._attempts.get(name, 0) + 1
        task = self.tasks.run(name, lambda progress, cancel: source.start())

        def opened(_result: object) -> None:
            if self._attempts.get(name) != attempt or not button.isChecked():
                source.stop()
                return
            started(source)

        def not_opened(message: str) -> None:
            if self._attempts.get(name) == attempt:
                failed(message)

        task.done.connect(opened)
        task.failed.connect(not_opened)
        task.start()

    def _stop_mic(self) -> None:
        self._meter_timer.stop()
        self.mic_meter.reset()
        source, self._mic_source = self._mic_source, None
        if source is not None:
            try:
                source.stop()
            except Exception:
                log.exception("stopping the microphone test failed")

    def _play_tone(self) -> None:
        device = device_spec(_combo_value(self.speaker))
        task = self.tasks.run("tone", lambda progress, cancel: audio_tools.play_tone(
            progress, cancel, device=device))
        self.tone.setEnabled(False)
        task.done.connect(lambda _r: (self.tone.setEnabled(True),
                                      set_note(self.speaker_note, "Did you hear a short beep?")))
        task.failed.connect(lambda msg: (self.tone.setEnabled(True),
                                         set_note(self.speaker_note, msg, "error")))
        task.start()

    def stop_tests(self) -> None:
        """Stop every test source (the dialog closes)."""
        self._stop_camera()
        self._stop_mic()
        self.camera_test.setChecked(False)
        self.mic_test.setChecked(False)

    def hideEvent(self, event: Any) -> None:
        self.stop_tests()
        super().hideEvent(event)


