"""Builds Duetto's installer for the system this runs on (`make package`).

    python packaging/build_installer.py [--skip-freeze]

1. icons from packaging/icons/duetto.svg (PNG; ICO on Windows, ICNS on macOS);
2. the payload (packaging/build_payload.py): locks, the app's wheel, uv, the Python runtime;
3. the launcher frozen by PyInstaller (packaging/launcher.spec): one folder, no torch;
4. the artifact in dist/:
   * Linux: duetto-VERSION-linux-x86_64.tar.gz, a folder with the launcher, its payload,
     install.sh / uninstall.sh, a .desktop entry and the icon;
   * Windows: build/dist/duetto + payload, which packaging/windows/duetto.iss (Inno Setup,
     run by the release workflow) turns into Duetto-VERSION-setup.exe;
   * macOS: Duetto.app with the payload in Contents/Resources, in Duetto-VERSION.dmg.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "packaging"
BUILD = ROOT / "build"
DIST = ROOT / "dist"


def say(text: str) -> None:
    print(f"[package] {text}", flush=True)


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def icons() -> Path:
    """PNG (and ICO, ICNS) of the app icon, drawn from the SVG by Qt, converted by Pillow."""
    out = HERE / "build-icons"
    out.mkdir(exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([])
    image = QImage(512, 512, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    QSvgRenderer(str(HERE / "icons" / "duetto.svg")).render(painter)
    painter.end()
    image.save(str(out / "duetto.png"))
    del app
    from PIL import Image

    picture = Image.open(out / "duetto.png")
    if sys.platform == "win32":
        picture.save(out / "duetto.ico", sizes=[(s, s) for s in (16, 32, 48, 64, 128, 256)])
    if sys.platform == "darwin":
        picture.save(out / "duetto.icns")
    return out


def payload() -> Path:
    staging = BUILD / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run([sys.executable, str(HERE / "build_payload.py"), str(staging)], check=True)
    return staging / "payload"


def freeze() -> Path:
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                    "--distpath", str(BUILD / "dist"), "--workpath", str(BUILD / "work"),
                    str(HERE / "launcher.spec")], check=True, cwd=ROOT)
    return BUILD / "dist" / "duetto"


def linux(launcher: Path, found: Path, art: Path) -> Path:
    name = f"duetto-{version()}-linux-{platform.machine()}"
    folder = BUILD / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(launcher, folder, symlinks=True)
    shutil.copytree(found, folder / "payload", symlinks=True)
    share = folder / "share"
    share.mkdir()
    shutil.copy2(HERE / "icons" / "duetto.svg", share / "duetto.svg")
    shutil.copy2(art / "duetto.png", share / "duetto.png")
    shutil.copy2(HERE / "linux" / "duetto.desktop", share / "duetto.desktop")
    for script in ("install.sh", "uninstall.sh"):
        shutil.copy2(HERE / "linux" / script, folder / script)
        (folder / script).chmod(0o755)
    DIST.mkdir(exist_ok=True)
    archive = DIST / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(folder, arcname=name)
    return archive


def windows(launcher: Path, found: Path) -> Path:
    target = launcher / "payload"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(found, target)
    iscc = shutil.which("iscc") or shutil.which("ISCC")
    if not iscc:
        say("Inno Setup (iscc) is not installed: the folder is ready for "
            "packaging/windows/duetto.iss")
        return launcher
    subprocess.run([iscc, f"/DAppVersion={version()}", f"/DSourceDir={launcher}",
                    f"/DOutputDir={DIST}", str(HERE / "windows" / "duetto.iss")], check=True)
    return DIST / f"Duetto-{version()}-setup.exe"


def macos(found: Path) -> Path:
    app = BUILD / "dist" / "Duetto.app"
    target = app / "Contents" / "Resources" / "payload"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(found, target, symlinks=True)
    DIST.mkdir(exist_ok=True)
    dmg = DIST / f"Duetto-{version()}.dmg"
    dmg.unlink(missing_ok=True)
    subprocess.run(["hdiutil", "create", "-volname", "Duetto", "-srcfolder", str(app),
                    "-ov", "-format", "UDZO", str(dmg)], check=True)
    return dmg


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-freeze", action="store_true",
                        help="reuse build/dist/duetto from an earlier run")
    args = parser.parse_args()
    art = icons()
    found = payload()
    launcher = BUILD / "dist" / "duetto" if args.skip_freeze else freeze()
    if sys.platform.startswith("linux"):
        artifact = linux(launcher, found, art)
    elif sys.platform == "win32":
        artifact = windows(launcher, found)
    else:
        artifact = macos(found)
    size = (artifact.stat().st_size if artifact.is_file()
            else sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file()))
    say(f"{artifact} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
