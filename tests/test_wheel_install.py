"""A non-editable install carries everything the app reads, and finds it from any folder.

The wheel is built from this checkout and installed with pip (no dependencies, into a
folder of its own), then a fresh interpreter started in an unrelated folder, with that
folder first on its path, loads the persona presets and the icons and runs doctor's check
of the shipped files. Once the assets lay outside the package: an installed wheel had no
presets and no drop-down arrows, and nothing said so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, app
from app.config import personas
from app import shipped
from app.ui import theme
library = personas.load_all()
print(json.dumps({
    "app": app.__file__,
    "presets": sorted(p.id for p in library.personas if p.preset),
    "problems": [p.describe() for p in library.problems],
    "chevron": __import__("os").path.isfile(theme.ICONS + "/chevron-down.svg"),
    "shipped": [(f.ok, f.text) for f in shipped.check()],
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a clean copy: a build/ or *.egg-info left in the checkout by an earlier
    # build would hand setuptools the files its package data no longer names.
    source = out / "source"
    shutil.copytree(ROOT / "app", source / "app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    # --no-build-isolation: the build uses this environment's setuptools, no download.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(source)],
                   check=True, cwd=out, timeout=240)
    (found,) = out.glob("duetto-*.whl")
    return found


def test_the_wheel_carries_every_file_the_package_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_folders = [ROOT / "app" / "assets", ROOT / "app" / "bench" / "scenarios",
                       ROOT / "app" / "bench" / "photos"]
    on_disk = {p.relative_to(ROOT).as_posix() for folder in shipped_folders
               for p in folder.rglob("*") if p.is_file() and p.name != "README.md"}
    assert on_disk, "no assets found in the checkout"
    assert on_disk - names == set()


def test_an_installed_wheel_loads_presets_and_icons_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(target), str(wheel)],
                   check=True, timeout=120)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DUETTO_ASSETS_DIR"}
    env.update(PYTHONPATH=str(target), QT_QPA_PLATFORM="offscreen",
               DUETTO_CONFIG_DIR=str(tmp_path / "config"))
    # -P: the current folder is not put on the path, as when the `duetto` script runs.
    done = subprocess.run([sys.executable, "-P", "-c", PROBE], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["app"]).is_relative_to(target)  # the installed copy, not the checkout
    expected = sorted(p.stem for p in (ROOT / "app/assets/personas").glob("*.json"))
    assert found["presets"] == expected
    assert found["problems"] == []
    assert found["chevron"] is True
    assert [text for ok, text in found["shipped"] if not ok] == []
