"""Downloads the plan's wheels, resumable, checked against the lock's sha256.

A wheel is fetched into `NAME.part` and renamed to its own name only once its size and
sha256 match the lock, so a folder of finished downloads never holds a bad file. A
cancelled or broken download keeps its `.part`; the next attempt asks the server for the
rest (an HTTP Range request) and starts over only when the server will not resume.
Progress is reported per chunk: which package, the bytes so far of all of them.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from duetto_launcher.plan import Wheel

CHUNK = 256 * 1024


class Cancelled(Exception):
    """The user cancelled; what was downloaded is kept for the next start."""


class DownloadError(RuntimeError):
    """A wheel could not be fetched; `offline` when no server could be reached at all."""

    def __init__(self, message: str, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


class Response(Protocol):
    status: int

    def read(self, size: int = -1) -> bytes: ...
    def close(self) -> None: ...


# Opens a URL from a byte offset: (url, start) -> a response (status 206 when it resumed,
# 200 when it sends the whole file). Tests pass a fake server.
Opener = Callable[[str, int], Response]


def _tls() -> ssl.SSLContext:
    """The system's certificates (a company proxy's own authority lives there) and
    certifi's on top: a frozen launcher's OpenSSL looks for the certificate folder where the
    build machine keeps it, which another system may lack."""
    context = ssl.create_default_context()
    try:
        import certifi
    except ImportError:
        return context
    context.load_verify_locations(cafile=certifi.where())
    return context


def http_open(url: str, start: int) -> Response:
    request = urllib.request.Request(url, headers={"User-Agent": "duetto-launcher"})
    if start and not url.startswith("file:"):
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=60, context=_tls())


@dataclass
class Progress:
    package: str
    done_bytes: int
    total_bytes: int


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Downloader:
    def __init__(self, folder: Path, opener: Opener = http_open,
                 cancel: threading.Event | None = None) -> None:
        self.folder = folder
        self.opener = opener
        self.cancel = cancel or threading.Event()

    def target(self, wheel: Wheel) -> Path:
        return self.folder / wheel.filename

    def missing_bytes(self, wheels: list[Wheel]) -> int:
        return sum(w.size - self._have(w) for w in wheels)

    def _have(self, wheel: Wheel) -> int:
        if wheel.path is not None or self.target(wheel).is_file():
            return wheel.size
        part = self._part(wheel)
        return min(part.stat().st_size, wheel.size) if part.is_file() else 0

    def _part(self, wheel: Wheel) -> Path:
        return self.folder / (wheel.filename + ".part")

    def reachable(self, wheels: list[Wheel]) -> bool:
        """Whether the server of the first wheel still to fetch answers (True when nothing
        is left to fetch): asked before anything is said or written, so that an offline
        first start is one sentence and leaves nothing behind."""
        for wheel in wheels:
            if self._have(wheel) >= wheel.size and wheel.size:
                continue
            if not wheel.url:
                return True
            try:
                self.opener(wheel.url, 0).close()
            except urllib.error.HTTPError:
                return True  # a server answered: not offline
            except (urllib.error.URLError, OSError) as exc:
                return isinstance(getattr(exc, "reason", exc), ssl.SSLError)
            return True
        return True

    def fetch_all(self, wheels: list[Wheel],
                  report: Callable[[Progress], None] = lambda p: None) -> list[Path]:
        """Every wheel as a local file (carried ones where they lie), in plan order."""
        self.folder.mkdir(parents=True, exist_ok=True)
        total = sum(w.size for w in wheels)
        done = sum(self._have(w) for w in wheels)
        files = []
        for wheel in wheels:
            if wheel.path is not None:
                files.append(wheel.path)
                continue
            before = self._have(wheel)

            def step(now: int, wheel: Wheel = wheel, start: int = done - before) -> None:
                report(Progress(wheel.name, start + now, total))

            files.append(self.fetch(wheel, step))
            done += wheel.size - before
        report(Progress("", done, total))
        return files

    def fetch(self, wheel: Wheel, step: Callable[[int], None] = lambda n: None) -> Path:
        final = self.target(wheel)
        if final.is_file():
            return final
        if not wheel.url:
            raise DownloadError(f"{wheel.filename}: the lock gives no address to fetch it")
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self._part(wheel)
        have = part.stat().st_size if part.is_file() else 0
        if have > wheel.size:
            part.unlink()
            have = 0
        if have < wheel.size or wheel.size == 0:
            have = self._stream(wheel, part, have, step)
        if wheel.size and have != wheel.size:
            raise DownloadError(f"{wheel.filename}: got {have} bytes, the lock says "
                                f"{wheel.size}")
        if _sha256_of(part) != wheel.sha256:
            part.unlink()
            raise DownloadError(f"{wheel.filename}: its sha256 does not match the lock "
                                "(damaged on the way); it will be fetched again")
        part.replace(final)
        return final

    def _stream(self, wheel: Wheel, part: Path, have: int, step: Callable[[int], None]) -> int:
        assert wheel.url is not None
        try:
            response = self.opener(wheel.url, have)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{wheel.filename}: the server answered {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            # A certificate the launcher cannot verify is not a missing network.
            offline = not isinstance(reason, ssl.SSLError)
            raise DownloadError(f"{wheel.filename}: {reason}", offline=offline) from exc
        try:
            # 200 (or None, a file: URL): the whole file comes again, not the rest.
            if have and response.status != 206:
                have = 0
            mode = "ab" if have else "wb"
            with part.open(mode) as out:
                have = self._copy(response, out, have, step)
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(f"{wheel.filename}: the download broke off at {have} bytes "
                                f"({exc}); it resumes from there next time",
                                offline=True) from exc
        finally:
            response.close()
        return have

    def _copy(self, response: Response, out: BinaryIO, have: int,
              step: Callable[[int], None]) -> int:
        while True:
            if self.cancel.is_set():
                raise Cancelled()
            block = response.read(CHUNK)
            if not block:
                return have
            out.write(block)
            have += len(block)
            step(have)

