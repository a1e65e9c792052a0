"""Settings → Personas: pick who the assistant is for the next conversation, and write
your own (name, role prompt, language, voice: a built-in one or a reference recording).

Presets are read-only; "Save" on a preset writes your copy under the same id, which then
replaces the preset. Recording and playback run on task threads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from app.config import personas as store
from app.config.personas import PersonaFile, PersonaLibrary
from app.config.settings import Settings
from app.model.contract import BackendSpec
from app.ui import audio_tools
from app.ui.options import device_spec
from app.ui.pages.common import note, page_layout, set_note
from app.ui.tasks import TaskGroup

LANGUAGES = (("en", "English"), ("es", "Spanish"), ("fr", "French"), ("de", "German"),
             ("it", "Italian"), ("pt", "Portuguese"), ("zh", "Chinese"), ("ja", "Japanese"),
             ("ko", "Korean"), ("ru", "Russian"))


class PersonasPage(QWidget):
    def __init__(self, settings: Settings, library: PersonaLibrary,
                 spec: BackendSpec | None, tasks: TaskGroup,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.library = library
        self.spec = spec
        self.tasks = tasks
        self.changed = False  # a persona file was written or deleted
        self._current: PersonaFile | None = None
        self._reference: Path | None = None

        layout = page_layout(self, "Persona", "Who the assistant is: a role, a language and a "
                                              "voice. The choice applies to the next "
                                              "conversation.")
        body = QHBoxLayout()
        body.setSpacing(16)
        left = QVBoxLayout()
        self.list = QListWidget(self)
        self.list.setMinimumWidth(210)
        self.list.setMaximumWidth(230)
        left.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        self.new_button = QPushButton("New", self)
        self.duplicate_button = QPushButton("Duplicate", self)
        self.delete_button = QPushButton("Delete", self)
        for b in (self.new_button, self.duplicate_button, self.delete_button):
            buttons.addWidget(b)
        left.addLayout(buttons)
        body.addLayout(left)

        editor = QVBoxLayout()
        form = QFormLayout()
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(10)
        self.name = QLineEdit(self)
        self.description = QLineEdit(self)
        self.language = QComboBox(self)
        self.language.setEditable(True)
        for code, label in LANGUAGES:
            self.language.addItem(f"{label} ({code})", code)
        self.prompt = QPlainTextEdit(self)
        self.prompt.setPlaceholderText("You are … Speak briefly, like a person on a call.")
        self.prompt.setMinimumHeight(150)
        form.addRow("Name", self.name)
        form.addRow("Description", self.description)
        form.addRow("Language", self.language)
        form.addRow("Role prompt", self.prompt)

        voice_box = QVBoxLayout()
        self.builtin_radio = QRadioButton("Built-in voice", self)
        self.reference_radio = QRadioButton("Reference recording", self)
        group = QButtonGroup(self)
        group.addButton(self.builtin_radio)
        group.addButton(self.reference_radio)
        row = QHBoxLayout()
        row.addWidget(self.builtin_radio)
        self.voice_combo = QComboBox(self)
        self.voice_combo.setMinimumWidth(160)
        row.addWidget(self.voice_combo)
        row.addStretch(1)
        voice_box.addLayout(row)
        voice_box.addWidget(self.reference_radio)
        self.reference_label = QLineEdit(self)
        self.reference_label.setReadOnly(True)
        self.reference_label.setPlaceholderText("no recording yet")
        self.reference_label.setContentsMargins(24, 0, 0, 0)
        voice_box.addWidget(self.reference_label)
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        self.pick_button = QPushButton("Choose file…", self)
        self.record_button = QPushButton("Record 10 s", self)
        self.play_button = QPushButton("Play", self)
        row.addWidget(self.pick_button)
        row.addWidget(self.record_button)
        row.addWidget(self.play_button)
        row.addStretch(1)
        voice_box.addLayout(row)
        self.record_progress = QProgressBar(self)
        self.record_progress.setRange(0, 1000)
        self.record_progress.setFixedHeight(6)
        self.record_progress.hide()
        voice_box.addWidget(self.record_progress)
        self.voice_note = note("", self)
        voice_box.addWidget(self.voice_note)
        form.addRow("Voice", voice_box)
        editor.addLayout(form)

        self.status = note("", self)
        editor.addWidget(self.status)
        actions = QHBoxLayout()
        actions.addStretch(1)
        self.save_button = QPushButton("Save persona", self)
        self.use_button = QPushButton("Use for next conversation", self)
        self.use_button.setObjectName("primary")
        actions.addWidget(self.save_button)
        actions.addWidget(self.use_button)
        editor.addLayout(actions)
        body.addLayout(editor, 1)
        layout.addLayout(body, 1)

        self.list.currentItemChanged.connect(self._on_select)
        self.new_button.clicked.connect(self.new_persona)
        self.duplicate_button.clicked.connect(self.duplicate)
        self.delete_button.clicked.connect(self.delete)
        self.save_button.clicked.connect(self.save_current)
        self.use_button.clicked.connect(self.use_current)
        self.pick_button.clicked.connect(self._pick_file)
        self.record_button.clicked.connect(self.record)
        self.play_button.clicked.connect(self.play)
        self.builtin_radio.toggled.connect(self._sync_voice_widgets)
        self._fill_voices()
        self._fill_list(select=settings.persona)

    # ------------------------------------------------------------------ list
    def _fill_list(self, select: str | None = None) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        chosen_row = 0
        for row, persona in enumerate(self.library.personas):
            active = persona.id == self.settings.persona
            label = persona.name + ("  ·  in use" if active else "")
            if not persona.preset:
                label += "   (yours)"
            item = QListWidgetItem(label)
            item.setSizeHint(QSize(0, 34))
            item.setData(Qt.ItemDataRole.UserRole, persona.id)
            item.setToolTip(persona.description)
            self.list.addItem(item)
            if persona.id == select:
                chosen_row = row
        self.list.blockSignals(False)
        if self.list.count():
            self.list.setCurrentRow(chosen_row)
            self._on_select(self.list.currentItem(), None)

    def _on_select(self, item: QListWidgetItem | None, _previous: Any) -> None:
        if item is None:
            return
        persona = self.library.get(item.data(Qt.ItemDataRole.UserRole))
        if persona is not None:
            self.show_persona(persona)

    def show_persona(self, persona: PersonaFile) -> None:
        self._current = persona
        self.name.setText(persona.name)
        self.description.setText(persona.description)
        index = self.language.findData(persona.language)
        if index < 0:
            self.language.addItem(persona.language, persona.language)
            index = self.language.count() - 1
        self.language.setCurrentIndex(index)
        self.prompt.setPlainText(persona.role_prompt)
        self._reference = persona.reference_audio
        self.reference_label.setText(str(persona.reference_audio or ""))
        if persona.reference_audio is not None and not persona.builtin_voice:
            self.reference_radio.setChecked(True)
        else:
            self.builtin_radio.setChecked(True)
            wanted = persona.builtin_voice or ""
            index = self.voice_combo.findData(wanted)
            if index < 0 and wanted:
                self.voice_combo.addItem(f"{wanted} (not in this model)", wanted)
                index = self.voice_combo.count() - 1
            self.voice_combo.setCurrentIndex(max(0, index))
        self.delete_button.setEnabled(not persona.preset)
        set_note(self.status, "Preset: saving writes your own copy." if persona.preset
                 else f"Stored in {persona.path.parent if persona.path else 'your folder'}")
        self._sync_voice_widgets()

    # ------------------------------------------------------------------ voices
    def _fill_voices(self) -> None:
        self.voice_combo.clear()
        voices = self.spec.voices if self.spec else ()
        self.voice_combo.addItem("Model default", "")
        for voice in voices:
            self.voice_combo.addItem(voice, voice)
        if self.spec is None:
            text = "Voices appear here once the model's family is known."
        else:
            names = ", ".join(voices) or "none"
            text = f"{self.spec.family} voices: {names}. "
            text += ("It can also imitate a reference recording." if
                     self.spec.accepts_reference_voice else
                     "It cannot speak with a reference recording; one is kept for models "
                     "that can.")
        set_note(self.voice_note, text)

    def set_spec(self, spec: BackendSpec | None) -> None:
        self.spec = spec
        current = self._current
        self._fill_voices()
        if current is not None:
            self.show_persona(current)

    def _sync_voice_widgets(self) -> None:
        builtin = self.builtin_radio.isChecked()
        self.voice_combo.setEnabled(builtin)
        for widget in (self.reference_label, self.pick_button, self.record_button):
            widget.setEnabled(not builtin)
        self.play_button.setEnabled(not builtin and self._reference is not None)

    # ------------------------------------------------------------------ editing
    def edited(self) -> PersonaFile:
        """The editor's content as a persona (not saved)."""
        base = self._current
        builtin = self.builtin_radio.isChecked()
        language = self.language.currentData() or self.language.currentText().strip() or "en"
        stored = base is not None and base.path is not None
        # A persona not stored yet takes its id (its file name) from its name.
        return PersonaFile(
            id=base.id if stored else store.unique_id(self.name.text(), self.library.ids()),
            name=self.name.text().strip(),
            role_prompt=self.prompt.toPlainText().strip(),
            language=str(language),
            description=self.description.text().strip(),
            builtin_voice=(self.voice_combo.currentData() or None) if builtin else None,
            reference_audio=None if builtin else self._reference,
        )

    def save_current(self) -> PersonaFile | None:
        persona = self.edited()
        try:
            saved = store.save_user(persona)
        except (ValueError, OSError) as exc:
            set_note(self.status, f"Not saved: {exc}", "error")
            return None
        self.changed = True
        self._reload(select=saved.id)
        set_note(self.status, f"Saved {saved.name}.", "ok")
        return saved

    def use_current(self) -> None:
        current = self._current
        if current is None:
            return
        if self._dirty() and self.save_current() is None:
            return
        self.settings.persona = self._current.id if self._current else current.id
        self._fill_list(select=self.settings.persona)
        set_note(self.status, f"{self.library.get(self.settings.persona).name} will be used "
                              "for the next conversation.", "ok")

    def _dirty(self) -> bool:
        current = self._current
        if current is None:
            return False
        edited = self.edited()
        return (edited.name, edited.role_prompt, edited.language, edited.description,
                edited.builtin_voice, edited.reference_audio) != (
            current.name, current.role_prompt, current.language, current.description,
            current.builtin_voice, current.reference_audio)

    def new_persona(self) -> None:
        persona = PersonaFile(id=store.unique_id("my persona", self.library.ids()),
                              name="My persona", role_prompt="You are ")
        self._current = persona
        self.show_persona(persona)
        self.delete_button.setEnabled(False)
        set_note(self.status, "New persona: write its role, then Save.", "accent")
        self.name.setFocus()
        self.name.selectAll()

    def duplicate(self) -> None:
        current = self._current
        if current is None:
            return
        name = f"{current.name} (copy)"
        copy = PersonaFile(id=store.unique_id(name, self.library.ids()), name=name,
                           role_prompt=current.role_prompt, language=current.language,
                           description=current.description,
                           builtin_voice=current.builtin_voice,
                           reference_audio=current.reference_audio)
        self._current = copy
        self.show_persona(copy)
        set_note(self.status, "A copy: change it, then Save.", "accent")

    def delete(self) -> None:
        current = self._current
        if current is None or current.preset:
            return
        try:
            store.delete_user(current)
        except (ValueError, OSError) as exc:
            set_note(self.status, f"Not deleted: {exc}", "error")
            return
        self.changed = True
        if self.settings.persona == current.id:
            self.settings.persona = "friendly-assistant"
        self._reload(select=self.settings.persona)

    def _reload(self, select: str) -> None:
        self.library = store.load_all()
        self._fill_list(select=select)

    # ------------------------------------------------------------------ recordings
    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a recording of the voice", "",
                                              "Audio (*.wav *.flac *.ogg)")
        if path:
            self.set_reference(Path(path))

    def set_reference(self, path: Path) -> None:
        self._reference = path
        self.reference_label.setText(str(path))
        self.reference_radio.setChecked(True)
        self._sync_voice_widgets()

    def record(self) -> None:
        target = store.voices_dir() / f"{self._current.id if self._current else 'voice'}-" \
                                      f"{time.strftime('%Y%m%d-%H%M%S')}.wav"
        task = self.tasks.run("record", lambda progress, cancel: audio_tools.record_reference(
            target, progress, cancel, device=self._mic_spec()))
        self.record_button.setEnabled(False)
        self.record_progress.setValue(0)
        self.record_progress.show()
        set_note(self.status, "Recording: read a few sentences aloud…", "accent")
        task.progress.connect(lambda _w, f: self.record_progress.setValue(int(f * 1000)))
        task.done.connect(self._recorded)
        task.failed.connect(self._audio_failed)
        task.start()

    def _mic_spec(self) -> int | str | None:
        return device_spec(self.settings.devices.mic)

    def _recorded(self, path: Path) -> None:
        self.record_progress.hide()
        self.record_button.setEnabled(True)
        self.set_reference(path)
        set_note(self.status, "Recorded. Play it to check, then Save.", "ok")

    def _audio_failed(self, message: str) -> None:
        self.record_progress.hide()
        self._sync_voice_widgets()
        set_note(self.status, message[:1].upper() + message[1:], "error")

    def play(self) -> None:
        path = self._reference
        if path is None:
            return
        device = device_spec(self.settings.devices.speaker)
        task = self.tasks.run("play", lambda progress, cancel: audio_tools.play_file(
            path, progress, cancel, device=device))
        task.failed.connect(self._audio_failed)
        task.done.connect(lambda _r: set_note(self.status, "Played.", "muted"))
        task.start()
