"""`duetto doctor`: what this machine offers and lacks for Duetto.

Every check runs on its own and is guarded: a machine without sound, camera or GPU gets
one clear line per missing piece, never a traceback. Heavy imports (torch) happen only
here, inside the checks, so a broken install is itself reported as a finding.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from app import paths


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"  # Duetto can run, but without this (or slower)
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    status: Status
    text: str


@dataclass
class Section:
    title: str
    findings: list[Finding] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.findings.append(Finding(Status.OK, text))

    def missing(self, text: str) -> None:
        self.findings.append(Finding(Status.MISSING, text))

    def info(self, text: str) -> None:
        self.findings.append(Finding(Status.INFO, text))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_system(section: Section) -> None:
    section.info(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}")


def check_audio(section: Section) -> None:
    from app.capture.devices import list_audio_devices

    listing = list_audio_devices()
    if listing.reason:
        section.missing(f"audio devices: {listing.reason}")
    if not listing.inputs:
        section.missing("microphone: none found (a WAV/FLAC file can stand in: --mic FILE)")
    for dev in listing.inputs:
        section.ok(f"microphone #{dev.index}: {dev.name} ({dev.channels} ch, {dev.rate:g} Hz)")
    if not listing.outputs:
        section.missing("speaker: none found (output can go to a file or nowhere: --speaker null)")
    for dev in listing.outputs:
        section.ok(f"speaker #{dev.index}: {dev.name} ({dev.channels} ch, {dev.rate:g} Hz)")


def check_camera(section: Section) -> None:
    from app.capture.devices import list_cameras

    listing = list_cameras()
    if not listing.cameras:
        reason = f" ({listing.reason})" if listing.reason else ""
        section.missing(f"camera: none found{reason}; a video file can stand in: --camera FILE")
    for cam in listing.cameras:
        section.ok(f"camera #{cam.index}: {cam.width}×{cam.height}")


def check_gpu(section: Section) -> None:
    try:
        import torch
    except Exception as exc:  # a broken torch install is a finding, not a crash
        section.missing(f"torch: cannot be imported ({exc})")
        return
    cuda = torch.version.cuda or "none (CPU-only build)"
    section.info(f"torch {torch.__version__}, CUDA runtime {cuda}")
    if not torch.cuda.is_available():
        section.missing("GPU: none (models run on the CPU, far slower than real time)")
        return
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        section.ok(
            f"GPU {index}: {props.name}, compute {props.major}.{props.minor}, "
            f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
        )


def check_libraries(section: Section) -> None:
    for dist, purpose in (
        ("transformers", "model classes"),
        ("accelerate", "device placement"),
        ("bitsandbytes", "4-bit and 8-bit weights"),
        ("silero-vad", "voice activity"),
        ("livekit", "echo cancellation"),
        ("sounddevice", "audio devices"),
        ("opencv-python-headless", "camera"),
        ("PySide6-Essentials", "the window"),
    ):
        version = _version(dist)
        if version is None:
            section.missing(f"{dist}: not installed ({purpose})")
        else:
            section.ok(f"{dist} {version} ({purpose})")
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:
        section.missing(f"bitsandbytes cannot be imported: {exc} (only bf16/fp16 weights)")


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def check_models(section: Section) -> None:
    folder = paths.models_dir()
    section.info(f"model folder: {folder}")
    if not folder.is_dir():
        section.missing("no models downloaded yet (duetto models list, duetto models get ID)")
        return
    entries = sorted(p for p in folder.iterdir() if p.is_dir())
    if not entries:
        section.missing("no models downloaded yet (duetto models list, duetto models get ID)")
    for entry in entries:
        section.ok(f"{entry.name}: {_folder_size(entry) / 2**30:.2f} GiB")


def check_shipped(section: Section) -> None:
    from app import shipped

    for item in shipped.check():
        if item.ok:
            section.ok(item.text)
        else:
            section.missing(item.text)


CHECKS: tuple[tuple[str, Callable[[Section], None]], ...] = (
    ("System", check_system),
    ("Files Duetto ships", check_shipped),
    ("Audio", check_audio),
    ("Camera", check_camera),
    ("GPU", check_gpu),
    ("Libraries", check_libraries),
    ("Models", check_models),
)


def collect() -> list[Section]:
    sections = []
    for title, check in CHECKS:
        section = Section(title)
        try:
            check(section)
        except Exception as exc:  # one failing check must not hide the others
            section.missing(f"could not check: {type(exc).__name__}: {exc}")
        sections.append(section)
    return sections


_MARKS = {Status.OK: "✓", Status.MISSING: "✗", Status.INFO: "·"}


def render(sections: list[Section]) -> str:
    lines = []
    for section in sections:
        lines.append(section.title)
        lines.extend(f"  {_MARKS[f.status]} {f.text}" for f in section.findings)
    missing = sum(f.status is Status.MISSING for s in sections for f in s.findings)
    lines.append("")
    lines.append(f"{missing} missing" if missing else "Everything Duetto uses is here.")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args: argparse.Namespace) -> int:
    sections = collect()
    if args.json:
        print(json.dumps([asdict(s) for s in sections], indent=2))
    else:
        print(render(sections))
    sys.stdout.flush()
    # Missing pieces are findings, not failures: doctor itself succeeded.
    return 0
