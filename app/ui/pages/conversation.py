"""Settings → Conversation: how turn-taking feels (how quickly Duetto answers, whether
it listens for how a sentence ends, barge-in sensitivity), echo cancellation,
push-to-talk and where recordings go."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QWidget,
)

from app.config.settings import PATIENCE_STEPS, Settings
from app.ui.pages.common import note, page_layout, section

# Barge-in sensitivity 1 (hard to interrupt) .. 10 (stops at the first syllable) maps to
# the seconds of speech over the assistant that count as an interruption.
PATIENCE_WORDS = {1: "quickest", 2: "quick", 3: "balanced", 4: "patient", 5: "most patient"}

SENSITIVITY_SECONDS = {1: 1.2, 2: 0.9, 3: 0.7, 4: 0.55, 5: 0.45, 6: 0.35, 7: 0.3, 8: 0.22,
                       9: 0.15, 10: 0.1}


def sensitivity_for(seconds: float) -> int:
    return min(SENSITIVITY_SECONDS, key=lambda k: abs(SENSITIVITY_SECONDS[k] - seconds))


class ConversationPage(QWidget):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        conv = settings.conversation
        self._default_dir = str(settings.recordings_dir())
        layout = page_layout(self, "Conversation", "How Duetto takes turns with you.")

        turns, t = section(self, "Turn-taking")
        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(6)
        self.patience = QSlider(Qt.Orientation.Horizontal, turns)
        self.patience.setRange(PATIENCE_STEPS[0], PATIENCE_STEPS[-1])
        self.patience.setValue(conv.turn_patience)
        self.patience_value = QLabel("", turns)
        self.patience_value.setMinimumWidth(90)
        grid.addWidget(QLabel("Answer when you pause", turns), 0, 0)
        grid.addWidget(self.patience, 0, 1)
        grid.addWidget(self.patience_value, 0, 2)
        grid.addWidget(note("Quicker answers sooner after you stop; more patient lets you "
                            "pause to think without being cut off.", turns), 1, 1)
        self.sensitivity = QSlider(Qt.Orientation.Horizontal, turns)
        self.sensitivity.setRange(1, 10)
        self.sensitivity.setValue(sensitivity_for(conv.barge_in_min_speech))
        self.sensitivity_value = QLabel("", turns)
        grid.addWidget(QLabel("Barge-in sensitivity", turns), 2, 0)
        grid.addWidget(self.sensitivity, 2, 1)
        grid.addWidget(self.sensitivity_value, 2, 2)
        grid.addWidget(note("How much of your speech over Duetto stops it. It pauses at "
                            "your first sound; a short word is judged by what it says "
                            "(\"mm-hm\", \"okay\": it goes on; \"stop\", \"wait\": it "
                            "stops), and a second or more of speech always stops it.",
                            turns), 3, 1)
        grid.setColumnStretch(1, 1)
        t.addLayout(grid)
        self.turn_model = QCheckBox("Listen for how you finish a sentence (answers at once "
                                    "when you are done, waits when you are mid-thought)",
                                    turns)
        self.turn_model.setChecked(conv.end_of_turn_model)
        t.addWidget(self.turn_model)
        t.addWidget(note("Off: only the length of your pause decides.", turns))
        self.push_to_talk = QCheckBox("Push-to-talk: the mic is open only while you hold "
                                      "Space or the Hold to talk button", turns)
        self.push_to_talk.setChecked(conv.push_to_talk)
        t.addWidget(self.push_to_talk)
        layout.addWidget(turns)

        audio, a = section(self, "Audio")
        self.echo = QCheckBox("Echo cancellation (keeps Duetto from hearing itself through "
                              "your speakers)", audio)
        self.echo.setChecked(conv.echo_cancellation)
        a.addWidget(self.echo)
        a.addWidget(note("Turn it off only with headphones.", audio))
        layout.addWidget(audio)

        rec, r = section(self, "Recordings")
        self.record = QCheckBox("Record conversations (a stereo WAV: you left, Duetto right, "
                                "plus an event log)", rec)
        self.record.setChecked(conv.record)
        r.addWidget(self.record)
        row = QHBoxLayout()
        self.folder = QLineEdit(conv.record_dir, rec)
        self.folder.setPlaceholderText(self._default_dir)
        browse = QPushButton("Browse…", rec)
        browse.clicked.connect(self._browse)
        row.addWidget(QLabel("Folder", rec))
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        r.addLayout(row)
        layout.addWidget(rec)
        layout.addStretch(1)

        self.patience.valueChanged.connect(self._labels)
        self.sensitivity.valueChanged.connect(self._labels)
        self._labels()

    def _labels(self) -> None:
        self.patience_value.setText(PATIENCE_WORDS[self.patience.value()])
        seconds = SENSITIVITY_SECONDS[self.sensitivity.value()]
        self.sensitivity_value.setText(f"after {seconds:.2f} s")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Where recordings go",
                                                  self.folder.text() or self._default_dir)
        if folder:
            self.folder.setText(folder)

    def apply_to(self, settings: Settings) -> None:
        conv = settings.conversation
        conv.turn_patience = self.patience.value()
        conv.end_of_turn_model = self.turn_model.isChecked()
        conv.barge_in_min_speech = SENSITIVITY_SECONDS[self.sensitivity.value()]
        conv.echo_cancellation = self.echo.isChecked()
        conv.push_to_talk = self.push_to_talk.isChecked()
        conv.record = self.record.isChecked()
        conv.record_dir = self.folder.text().strip()
