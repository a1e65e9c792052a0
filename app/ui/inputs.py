"""The files a conversation replays as microphone or camera, and the model folder named on
the command line: checked before anything slow (Qt, torch, the model) so that a wrong
path is said at once. Light to import on purpose: the command line runs this first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.capture.sources import names_a_file
from app.ui import messages
from app.ui.messages import UserMessage

# (file, "audio" | "video") -> why it cannot be replayed, or None when it can.
MediaCheck = Callable[[Path, str], str | None]


def file_exists(path: Path, _kind: str) -> str | None:
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    return None


def input_problems(mic: object, camera: object, check: MediaCheck = file_exists, *,
                   at_launch: bool = False) -> list[UserMessage]:
    """The microphone and camera files that cannot be replayed (devices are not opened
    here: that is the session's start)."""
    found = []
    for role, kind, spec in (("microphone", "audio", mic), ("camera", "video", camera)):
        if spec is not None and names_a_file(spec):
            path = Path(str(spec)).expanduser()
            problem = check(path, kind)
            if problem:
                found.append(messages.unusable_input(role, path, problem, at_launch=at_launch))
    return found


def launch_problems(mic: object, camera: object, model_dir: Path | None,
                    check: MediaCheck = file_exists) -> list[UserMessage]:
    """What the command line names that cannot be used: said before Qt starts."""
    found = input_problems(mic, camera, check, at_launch=True)
    if model_dir is not None and not model_dir.is_dir():
        found.append(messages.missing_model_folder(model_dir))
    return found
