"""The panel beside the video: who the assistant is, how loud each side is, and how
quickly it answers."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.ui import theme
from app.ui.slowness import SLOW_ANSWER_S
from app.ui.widgets.meter import LevelMeter
from app.ui.widgets.subtitles import breakable, tail


def heading(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text.upper(), parent)
    label.setObjectName("heading")
    return label


def muted(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("muted")
    label.setWordWrap(True)
    return label


def card(parent: QWidget) -> tuple[QFrame, QVBoxLayout]:
    frame = QFrame(parent)
    frame.setObjectName("card")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(16, 14, 16, 16)
    layout.setSpacing(8)
    return frame, layout


RTF_TIP = ("Real-time factor: how many seconds this machine takes to compute one second "
           "of the assistant's speech. Below 1× it keeps up and speaks smoothly; at 2× a "
           "1 s sentence takes 2 s to make, so answers come late and in pieces.")
NETWORK_TIP = ("The model runs on a server: what the network adds to each answer (the "
               "round trip less the server's own time).")


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


class Transcript(QLabel):
    """The last few answers, newest last; an interrupted one shows only what was heard."""

    KEEP = 3
    CHARS = 110
    EMPTY = ("Press Start and talk. Duetto listens while it speaks, so you can interrupt "
             "it at any time.")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.entries: list[list] = []  # [response id, text, interrupted]
        self._render()

    def add(self, text: str, response: int) -> None:
        if self.entries and self.entries[-1][0] == -1 and response != -1:
            self.entries[-1][0] = response  # its first words came before its id was known
        if not self.entries or self.entries[-1][0] != response:
            self.entries.append([response, "", False])
            del self.entries[:-self.KEEP]
        self.entries[-1][1] += text
        self._render()

    def mark_heard(self, heard: str) -> None:
        if self.entries:
            self.entries[-1][1] = heard
            self.entries[-1][2] = True
            self._render()

    def take_back(self, response: int) -> None:
        """An answer was retracted before it was heard: it was never said. -1 is the
        answer being prepared, whose id was not known yet: the last entry, if unnamed."""
        kept = [entry for entry in self.entries if entry[0] != response or response == -1]
        if kept and kept[-1][0] == -1:
            kept.pop()
        if len(kept) != len(self.entries):
            self.entries = kept
            self._render()

    def clear_entries(self) -> None:
        self.entries = []
        self._render()

    def _render(self) -> None:
        if not self.entries:
            self.setText(f"<span style='color:{theme.MUTED}'>{html.escape(self.EMPTY)}</span>")
            return
        rows = []
        for _rid, text, cut in self.entries:
            words = breakable(tail(text, self.CHARS), 22)
            note = (f" <span style='color:{theme.DANGER}'>— you interrupted</span>"
                    if cut else "")
            rows.append(f"<p style='margin:0 0 8px 0'><b style='color:{theme.ACCENT}'>"
                        f"Duetto</b> {html.escape(words)}{note}</p>")
        self.setText("".join(rows))


class SidePanel(QWidget):
    WIDTH = 300

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(12)

        persona, p = card(self)
        p.addWidget(heading("Persona", persona))
        self.persona_name = QLabel("", persona)
        self.persona_name.setObjectName("title")
        self.persona_name.setWordWrap(True)
        self.persona_text = muted("", persona)
        self.persona_voice = muted("", persona)
        self.persona_voice.setStyleSheet(f"color: {theme.ACCENT};")
        p.addWidget(self.persona_name)
        p.addWidget(self.persona_text)
        p.addWidget(self.persona_voice)
        layout.addWidget(persona)

        levels, lv = card(self)
        lv.addWidget(heading("Levels", levels))
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(10)
        self.mic_label = QLabel("You", levels)
        self.mic_meter = LevelMeter(theme.SUCCESS, levels)
        self.assistant_meter = LevelMeter(theme.ACCENT, levels)
        grid.addWidget(self.mic_label, 0, 0)
        grid.addWidget(self.mic_meter, 0, 1)
        grid.addWidget(QLabel("Duetto", levels), 1, 0)
        grid.addWidget(self.assistant_meter, 1, 1)
        grid.setColumnStretch(1, 1)
        lv.addLayout(grid)
        layout.addWidget(levels)

        timing, tv = card(self)
        tv.addWidget(heading("Latency", timing))
        figures = QGridLayout()
        figures.setVerticalSpacing(8)
        figures.setColumnStretch(0, 1)
        self.turn_value = QLabel("—", timing)
        self.stop_value = QLabel("—", timing)
        self.rtf_value = QLabel("—", timing)
        self.network_value = QLabel("—", timing)
        rows = []
        for row, (name, value, tip) in enumerate((
            ("Answer delay", self.turn_value,
             "last turn-taking latency: end of your speech → first sound of the answer"),
            ("Stop on interruption", self.stop_value,
             "last interruption latency: you start talking → the assistant is silent"),
            ("Real-time factor", self.rtf_value, RTF_TIP),
            ("Network", self.network_value, NETWORK_TIP),
        )):
            label = muted(name, timing)
            label.setToolTip(tip)
            value.setObjectName("bigValue")
            value.setToolTip(tip)
            figures.addWidget(label, row, 0)
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            figures.addWidget(value, row, 1)
            rows.append(label)
        # Shown only while the model runs on a server.
        self.network_label = rows[-1]
        self.network_label.hide()
        self.network_value.hide()
        tv.addLayout(figures)
        # What the factor means, in words, once it says this machine is too slow.
        self.rtf_note = muted("", timing)
        self.rtf_note.setStyleSheet(f"color: {theme.WARNING};")
        self.rtf_note.hide()
        tv.addWidget(self.rtf_note)
        layout.addWidget(timing)

        self.transcript_card, tr = card(self)
        tr.addWidget(heading("Conversation", self.transcript_card))
        self.transcript = Transcript(self.transcript_card)
        tr.addWidget(self.transcript)
        layout.addWidget(self.transcript_card)
        layout.addStretch(1)

    def scrolling(self, parent: QWidget | None = None) -> QScrollArea:
        """The panel in a frameless vertical scroll area of the panel's width: where the
        window is short, its cards keep their size and scroll, rather than being squeezed
        until their text is cut (as two stacked banners once did)."""
        area = QScrollArea(parent)
        area.setWidget(self)
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        area.setFixedWidth(self.WIDTH)
        return area

    def set_persona(self, name: str, description: str, voice: str) -> None:
        self.persona_name.setText(name)
        self.persona_text.setText(description)
        self.persona_voice.setText(f"Voice: {voice}")

    def set_latency(self, kind: str, seconds: float) -> None:
        if kind in ("turn_taking", "response_after_interruption"):
            # Both are the end of the user's speech to the answer's first sound; say
            # which, since an answer after an interruption is timed the same way.
            self.turn_value.setText(_seconds(seconds))
            late = seconds > SLOW_ANSWER_S
            self.turn_value.setStyleSheet(f"color: {theme.WARNING};" if late else "")
            after = "after you interrupted: " if kind == "response_after_interruption" else ""
            self.turn_value.setToolTip(f"last answer, {after}end of your speech → first "
                                       "sound of the answer" + (
                                           f" (late: a conversation needs under "
                                           f"{SLOW_ANSWER_S:.0f} s)" if late else ""))
        elif kind == "stop":
            self.stop_value.setText(_seconds(seconds))

    def set_rtf(self, rtf: float | None) -> None:
        if rtf is None:
            return
        self.rtf_value.setText(f"{rtf:.2f}×")
        color = theme.SUCCESS if rtf < 1 else theme.WARNING
        self.rtf_value.setStyleSheet(f"color: {color};")
        if rtf >= 1:
            self.rtf_note.setText(f"1 s of speech takes {rtf:.1f} s to compute here: too "
                                  "slow to keep up, so answers come late.")
        self.rtf_note.setVisible(rtf >= 1)

    def set_network(self, figures: dict[str, float] | None) -> None:
        """A model on a server: the network's share (RemoteBackend.network_figures)."""
        shown = figures is not None
        self.network_label.setVisible(shown)
        self.network_value.setVisible(shown)
        if figures is None:
            return
        hop = figures.get("hop_median_ms")
        text = (f"{hop:.0f} ms" if hop is not None else
                f"{figures['handshake_ms']:.0f} ms")
        self.network_value.setText(text)
        detail = f"connecting took {figures['handshake_ms']:.0f} ms"
        if hop is not None:
            detail = (f"each answer: {hop:.0f} ms on the network (p90 "
                      f"{figures.get('hop_p90_ms', hop):.0f} ms); {detail}")
        self.network_value.setToolTip(f"{NETWORK_TIP}\n{detail}")

    def reset_figures(self) -> None:
        for value in (self.turn_value, self.stop_value, self.rtf_value, self.network_value):
            value.setText("—")
            value.setStyleSheet("")
        self.rtf_note.hide()
        self.mic_meter.reset()
        self.assistant_meter.reset()
        self.transcript.clear_entries()
