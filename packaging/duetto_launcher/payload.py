"""What the installer carries beside the launcher: `payload/payload.json` and the files it
names (the locks, the app's wheel and any wheel built from source, `uv`, and the Python
runtime the environment is made from). packaging/build_payload.py writes it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment

from duetto_launcher import plan
from duetto_launcher.plan import PlanError, Wheel
from packaging import tags

PAYLOAD_FILE = "payload.json"


@dataclass(frozen=True)
class Payload:
    folder: Path
    app_version: str
    python: str  # the runtime's version, "3.11.7"
    lock: str
    torch_locks: dict[str, str]  # build -> lock file
    wheels: list[str]
    uv: str
    runtime: str

    @property
    def torch_builds(self) -> list[str]:
        return sorted(self.torch_locks)

    @property
    def uv_path(self) -> Path:
        return self.folder / self.uv

    @property
    def runtime_path(self) -> Path:
        return self.folder / self.runtime

    def plan(self, torch_build: str) -> list[Wheel]:
        """The exact wheels of the environment with this torch build, for this computer."""
        if torch_build not in self.torch_locks:
            raise PlanError(f"this installer carries no lock for the {torch_build} build "
                            f"of torch ({', '.join(self.torch_builds)})")
        ranking = plan.tag_ranking(tags.sys_tags())
        environment = dict(default_environment())
        app = plan.read_lock(self.folder / self.lock, ranking, environment)
        torch = plan.read_lock(self.folder / self.torch_locks[torch_build], ranking,
                               environment)
        carried = [plan.carried_wheel(self.folder / w) for w in self.wheels]
        return plan.merge(app, torch, carried)


def read(folder: Path) -> Payload:
    try:
        data = json.loads((folder / PAYLOAD_FILE).read_text(encoding="utf-8"))
        return Payload(folder=folder, **data)
    except (OSError, ValueError, TypeError) as exc:
        raise PlanError(f"the installer is incomplete: {folder / PAYLOAD_FILE} cannot be "
                        f"read ({exc}); download the installer again") from exc


def locate() -> Path:
    """`payload/` beside the frozen launcher; DUETTO_PAYLOAD names another (tests, a
    launcher run from the checkout)."""
    override = os.environ.get("DUETTO_PAYLOAD")
    if override:
        return Path(override)
    if getattr(sys, "frozen", False):
        here = Path(sys.executable).resolve().parent
        # Beside the launcher (Linux, Windows); in a macOS bundle, Contents/Resources.
        for folder in (here / "payload", here.parent / "Resources" / "payload"):
            if folder.is_dir():
                return folder
        return here / "payload"
    return Path(__file__).resolve().parents[1] / "build" / "payload"
