"""Where the app's environment lives, what is installed in it, and what is damaged.

Everything the launcher writes lies in one folder, the user's data folder's `environment`
(DUETTO_ENV_DIR moves it): the Python runtime copied out of the installer, the virtual
environment `env`, and `downloads` while wheels are fetched. The user's own files
(settings, personas, recordings, models) lie elsewhere and are never touched here.

An environment counts as built only when its marker file, written last, names the exact
set of wheels (the plan's fingerprint). A folder without it is half-built.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.utils import canonicalize_name

from duetto_launcher.plan import Wheel

MARKER = "duetto-env.json"
WINDOWS = sys.platform == "win32"


def default_root() -> Path:
    override = os.environ.get("DUETTO_ENV_DIR")
    if override:
        return Path(override)
    import platformdirs

    # Beside the app's own data folder (recordings live in it), in a subfolder of its own
    # that uninstalling removes without touching the rest.
    return Path(platformdirs.user_data_dir("duetto")) / "environment"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def env(self) -> Path:
        return self.root / "env"

    @property
    def building(self) -> Path:
        return self.root / "env.new"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def runtime(self) -> Path:
        return self.root / "python"

    def python(self, env: Path | None = None) -> Path:
        env = env or self.env
        return env / ("Scripts/python.exe" if WINDOWS else "bin/python")

    def runtime_python(self) -> Path:
        return self.runtime / ("python.exe" if WINDOWS else "bin/python3")


@dataclass(frozen=True)
class Marker:
    fingerprint: str
    app_version: str
    torch_build: str
    torch_reason: str
    python: str

    def write(self, env: Path) -> None:
        partial = env / (MARKER + ".partial")
        partial.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        partial.replace(env / MARKER)


def read_marker(env: Path) -> Marker | None:
    try:
        data = json.loads((env / MARKER).read_text(encoding="utf-8"))
        return Marker(**data)
    except (OSError, ValueError, TypeError):
        return None


def site_packages(env: Path) -> Path | None:
    if WINDOWS:
        found = env / "Lib" / "site-packages"
        return found if found.is_dir() else None
    return next(iter(sorted((env / "lib").glob("python3*/site-packages"))), None)


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    dist_info: Path


def installed(env: Path) -> dict[str, Installed]:
    """Every distribution in the environment, by canonical name."""
    site = site_packages(env)
    if site is None:
        return {}
    found = {}
    for dist_info in site.glob("*.dist-info"):
        try:
            text = (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        headers = HeaderParser().parsestr(text, headersonly=True)
        name, version = headers.get("Name"), headers.get("Version")
        if name and version:
            found[canonicalize_name(name)] = Installed(canonicalize_name(name), version,
                                                       dist_info)
    return found


def _missing_files(dist_info: Path, site: Path) -> list[str]:
    try:
        lines = (dist_info / "RECORD").read_text(encoding="utf-8").splitlines()
    except OSError:
        return ["RECORD"]
    missing = []
    for line in lines:
        relative = line.split(",", 1)[0]
        if relative and not relative.endswith(".pyc") and not (site / relative).exists():
            missing.append(relative)
    return missing


@dataclass(frozen=True)
class Damage:
    name: str
    why: str


def inspect(env: Path, plan: list[Wheel]) -> tuple[list[Damage], list[str]]:
    """What of the plan is missing, of another version or lacks files (to install), and
    what is installed but not in the plan (to remove)."""
    site = site_packages(env)
    if site is None:
        return [Damage("python", "the environment has no site-packages")], []
    have = installed(env)
    damage = []
    for wheel in plan:
        dist = have.get(wheel.name)
        if dist is None:
            damage.append(Damage(wheel.name, "missing"))
        elif dist.version != wheel.version:
            damage.append(Damage(wheel.name, f"{dist.version} instead of {wheel.version}"))
        else:
            lost = _missing_files(dist.dist_info, site)
            if lost:
                damage.append(Damage(wheel.name, f"{len(lost)} files missing, such as {lost[0]}"))
    wanted = {w.name for w in plan}
    extra = sorted(name for name in have if name not in wanted)
    return damage, extra
