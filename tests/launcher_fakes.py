"""Stand-ins for the launcher's tests: tiny real wheels, a lock naming them, an installer
payload, and a FAKE NETWORK that serves the wheels from memory (no socket is opened).

The wheels are real (uv installs them into a real virtual environment), and so is uv;
only the network and the Python runtime the installer would carry are stood in for: the
runtime is a folder whose bin/python3 links to the interpreter running the tests.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sys
import urllib.error
import zipfile
from pathlib import Path

URL = "https://files.example.invalid/"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def make_wheel(folder: Path, name: str, version: str, payload_kb: int = 4) -> Path:
    """A pure-Python wheel `name` with one module that says its version, padded to about
    `payload_kb` KB so downloads take several chunks."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{module}/padding.bin": os.urandom(payload_kb * 1024),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 .encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name_in, data in files.items():
            archive.writestr(name_in, data)
        archive.writestr(f"{dist_info}/RECORD", record)
    return path


def pylock(wheels: list[Path], names: list[str]) -> str:
    """A PEP 751 lock naming each wheel by its address on the fake network."""
    lines = ['lock-version = "1.0"', 'created-by = "test"', ""]
    for wheel, name in zip(wheels, names, strict=True):
        version = wheel.name.split("-")[1]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines += ["[[packages]]", f'name = "{name}"', f'version = "{version}"',
                  f'wheels = [{{ url = "{URL}{wheel.name}", size = {wheel.stat().st_size}, '
                  f'hashes = {{ sha256 = "{digest}" }} }}]', ""]
    return "\n".join(lines)


class FakeResponse:
    def __init__(self, data: bytes, status: int, fail_after: int | None) -> None:
        self.stream = io.BytesIO(data)
        self.status = status
        self.fail_after = fail_after
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise ConnectionResetError("connection reset (fake network)")
        block = self.stream.read(size)
        self.sent += len(block)
        return block

    def close(self) -> None:
        pass


class FakeNetwork:
    """Serves files by URL from memory, honouring byte offsets like an HTTP server that
    supports Range; can be switched offline or made to break a transfer after N bytes."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.online = True
        self.break_after: int | None = None
        self.ranges_honoured = True
        self.requests: list[tuple[str, int]] = []

    def __call__(self, url: str, start: int) -> FakeResponse:
        self.requests.append((url, start))
        if not self.online:
            raise urllib.error.URLError("Name or service not known (fake network is offline)")
        data = self.files[url]
        if start and self.ranges_honoured:
            return FakeResponse(data[start:], 206, self.break_after)
        return FakeResponse(data, 200, self.break_after)


def make_payload(root: Path, app_wheels: list[tuple[str, str]], torch_builds: dict[str, str],
                 app_version: str = "0.1.0", kb: int = 64) -> tuple[Path, FakeNetwork]:
    """An installer payload: an app lock of `app_wheels` (name, version), one torch lock per
    build (a package `torch-sim` at that version), a carried `duetto-sim` wheel, the real
    uv and a runtime that links to this interpreter."""
    folder = root / f"payload-{app_version}"
    store = root / "store"
    folder.mkdir(parents=True)
    store.mkdir(exist_ok=True)
    network = {}
    wheels = [make_wheel(store, n, v, kb) for n, v in app_wheels]
    (folder / "pylock.toml").write_text(pylock(wheels, [n for n, _ in app_wheels]))
    torch_locks = {}
    for build, version in torch_builds.items():
        wheel = make_wheel(store, "torch-sim", version, kb * 4)
        wheels.append(wheel)
        torch_locks[build] = f"torch-{build}.pylock.toml"
        (folder / torch_locks[build]).write_text(pylock([wheel], ["torch-sim"]))
    for wheel in wheels:
        network[URL + wheel.name] = wheel.read_bytes()
    (folder / "wheels").mkdir()
    make_wheel(folder / "wheels", "duetto-sim", app_version, 1)
    (folder / "python" / "bin").mkdir(parents=True)
    (folder / "python" / "bin" / "python3").symlink_to(sys.executable)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "the launcher tests need uv (pip install uv)"
    (folder / "payload.json").write_text(json.dumps({
        "app_version": app_version, "python": "3.11-test", "lock": "pylock.toml",
        "torch_locks": torch_locks, "wheels": [f"wheels/duetto_sim-{app_version}-py3-none-any.whl"],
        "uv": uv, "runtime": "python",
    }))
    return folder, FakeNetwork(network)


class Recorder:
    """A listener that keeps what the launcher said and the progress it reported."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.steps: list[tuple[str, int, int]] = []

    def say(self, text: str) -> None:
        self.lines.append(text)

    def progress(self, step) -> None:
        self.steps.append((step.package, step.done_bytes, step.total_bytes))
