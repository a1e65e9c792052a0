"""The files a conversation replays as microphone or camera, and the model folder named on
the command line: checked before anything slow (Qt, torch, the model) so that a wrong
path is said at once. The files themselves are judged by `capture.sources.check_inputs`
(missing, a folder, empty, not media, no samples, no frames); this turns its findings
into messages. Light to import on purpose: the command line runs this first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.capture.sources import InputCheck, check_inputs
from app.ui import messages
from app.ui.messages import UserMessage

# (mic, camera) -> what check_inputs says about them.
InputChecker = Callable[[object, object], InputCheck]


@dataclass(frozen=True)
class InputFindings:
    mic: UserMessage | None = None  # the microphone file cannot be used
    camera: UserMessage | None = None  # the camera file cannot be used
    notes: tuple[UserMessage, ...] = ()  # what will be repaired on the way

    @property
    def problems(self) -> list[UserMessage]:
        return [m for m in (self.mic, self.camera) if m is not None]


def judge_inputs(mic: object, camera: object, *, at_launch: bool = False,
                 check: InputChecker = check_inputs) -> InputFindings:
    found = check(mic, camera)
    return InputFindings(
        mic=messages.unusable_input("microphone", found.mic_error, at_launch=at_launch)
        if found.mic_error else None,
        camera=messages.unusable_input("camera", found.camera_error, at_launch=at_launch)
        if found.camera_error else None,
        notes=tuple(messages.input_note(w) for w in found.warnings),
    )


def launch_problems(mic: object, camera: object, model_dir: Path | None,
                    check: InputChecker = check_inputs) -> list[UserMessage]:
    """What the command line names that cannot be used: said before Qt starts."""
    found = judge_inputs(mic, camera, at_launch=True, check=check).problems
    if model_dir is not None and not model_dir.is_dir():
        found.append(messages.missing_model_folder(model_dir))
    return found
