"""Disk faults for the rows: a folder nobody may write to, and a disk that fills up.

A read-only folder: `chmod 555` stops an ordinary user; root ignores modes, so for root
the folder is made immutable (`chattr +i`), or, where the filesystem has no such flag, a
read-only tmpfs is mounted on it. Each way is checked by trying to write, and undone
afterwards.

A full disk is simulated with the process's file-size limit (RLIMIT_FSIZE): from that
size on, every write that would grow a file fails with EFBIG ("File too large"), which is
what the recorder meets on a full disk (ENOSPC) at the same call. Python ignores the
SIGXFSZ that comes with it, so the failure arrives as an error, not a signal.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path


def _writable(folder: Path) -> bool:
    probe = folder / ".write-probe"
    try:
        probe.write_bytes(b"x")
    except OSError:
        return False
    probe.unlink(missing_ok=True)
    return True


def _run(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, check=False,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[str | None]:
    """Make `folder` read-only meanwhile; yields how ("chmod", "chattr", "mount"), or
    None when this machine offers no way to."""
    folder.mkdir(parents=True, exist_ok=True)
    undo: list[tuple[str, ...]] = []
    how: str | None = None
    os.chmod(folder, 0o555)
    if not _writable(folder):
        how = "chmod"
    elif _run("chattr", "+i", str(folder)):
        undo.append(("chattr", "-i", str(folder)))
        how = "chattr" if not _writable(folder) else None
    if how is None and _run("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)):
        undo.append(("umount", str(folder)))
        how = "mount" if not _writable(folder) else None
    try:
        yield how
    finally:
        for command in reversed(undo):
            _run(*command)
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o755)


@contextlib.contextmanager
def file_size_limit(limit_bytes: int) -> Iterator[None]:
    """No file of this process may grow past `limit_bytes` meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
