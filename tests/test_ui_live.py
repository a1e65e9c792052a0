"""The window over a live conversation with the tiny model, from files (no devices, no
GPU): the camera switched on and off mid-conversation, the answer delay and the
real-time factor as the side panel shows them."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import tiny_models
from media import write_video
from speech import needs_espeak, silence, speak

from app.flow.turn_end import JUDGE_AFTER, patience
from app.ui.main_window import MainWindow
from app.ui.options import LaunchOverrides

qwen_tiny_factory = tiny_models.qwen_tiny_factory

pytestmark = [needs_espeak, pytest.mark.slow]


def _seconds(text: str) -> float:
    value, unit = text.split()
    return float(value) / 1000 if unit == "ms" else float(value)


def test_a_live_conversation_switches_its_camera_and_shows_its_figures(
        qtbot, qwen_tiny_factory, tmp_path):
    folder = qwen_tiny_factory(min_answer_tokens=24)
    video = write_video(tmp_path / "desk.avi", frames=200, fps=20)
    mic = tmp_path / "talk.wav"
    question = speak("Hello there, what do you see on my desk today?")
    soundfile.write(mic, np.concatenate([silence(0.5), question, silence(5.0)]), 16000)
    window = MainWindow(LaunchOverrides(camera=str(video), mic=str(mic), speaker="null",
                                        model_dir=folder, quant="bf16", device="cpu"),
                        detect_hardware=None)
    qtbot.addWidget(window)
    window.show()
    try:
        window.camera_button.click()  # start with the camera off
        window.start_conversation()
        qtbot.waitUntil(lambda: window.controller.phase == "running", timeout=60_000)
        qtbot.wait(1000)
        assert window.stage.frames_shown == 0 and window.stage.placeholder == "Camera off"

        window.camera_button.click()  # on, mid-conversation
        qtbot.waitUntil(lambda: window.stage.has_frame, timeout=10_000)
        window.camera_button.click()  # and off again
        assert not window.stage.has_frame and window.stage.placeholder == "Camera off"

        qtbot.waitUntil(lambda: window.side.rtf_value.text() != "—", timeout=60_000)
        assert window.side.rtf_value.text().endswith("×")
        assert float(window.side.rtf_value.text()[:-1]) > 0
        qtbot.waitUntil(lambda: window.side.turn_value.text() != "—", timeout=10_000)
        # An answer is held until the end of the turn is decided: never before the
        # end-of-turn model is asked (or, with it off, before the silence has passed).
        conv = window.settings.conversation
        wait = JUDGE_AFTER if conv.end_of_turn_model else patience(conv.turn_patience).silence
        assert _seconds(window.side.turn_value.text()) >= wait - 0.02
        assert window.controller.phase == "running"
        assert not [t for t in window.messages.texts() if "could not" in t]
    finally:
        window.close()
