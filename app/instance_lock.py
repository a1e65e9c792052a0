"""One Duetto at a time per config folder: a lock the running app holds.

Two instances would share one settings file, one set of personas and one recordings
folder (each writing over what the other saved), and fight over the camera and the
microphone. The running app holds an operating-system lock on `duetto.lock` in the
config folder (filelock's `lock_descriptor`: flock on Linux and macOS, LockFileEx on
Windows) and writes who it is beside it (`duetto.lock.json`: process id, host, start).

The operating system drops the lock when its holder dies, however it dies (kill -9, a
crash, a power cut), so a stale lock never blocks anyone: the next start takes it over,
and says whose it was (`InstanceLock.took_over`). A second instance while the first
runs gets `AlreadyRunning`, whose text names the running one and says what to do.

No Qt here: the window and the command line call `acquire_instance_lock()` first thing
and show `str(exc)` if it raises; the returned lock is released by `release()` (or at
exit: the process ending lets go of it).

A folder where no lock can be taken (a read-only config folder, a filesystem without
locks) does not stop the app: the lock comes back with `enforced` False and a `note`
to show, and recordings still go to folders of their own (app/flow/recording.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import filelock

from app import paths
from app.config.atomic import write_text_atomic

LOCK_NAME = "duetto.lock"
HOLDER_NAME = "duetto.lock.json"


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) the lock."""

    pid: int
    host: str
    started: str  # local time, ISO 8601 to the second
    command: str = ""

    @classmethod
    def me(cls) -> LockHolder:
        return cls(pid=os.getpid(), host=socket.gethostname(),
                   started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   command=" ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200])

    @classmethod
    def from_json(cls, data: Any) -> LockHolder | None:
        try:
            return cls(pid=int(data["pid"]), host=str(data["host"]),
                       started=str(data["started"]), command=str(data.get("command", "")))
        except (TypeError, KeyError, ValueError):
            return None

    def describe(self) -> str:
        where = "on this computer" if self.host == socket.gethostname() else f"on {self.host}"
        when = self.started.replace("T", " at ")
        return f"process {self.pid} {where}, started {when}"


class AlreadyRunning(Exception):
    """Another Duetto holds the lock; `str()` is the sentence to show."""

    def __init__(self, path: Path, holder: LockHolder | None) -> None:
        self.path = path
        self.holder = holder
        who = f" ({holder.describe()})" if holder else ""
        super().__init__(
            f"Duetto is already running{who}. Switch to that window, or close it and start "
            "again: two at once would write over each other's settings and recordings. "
            f"(The lock is {path}; it is let go when that Duetto ends, even if it crashes.)"
        )


@dataclass
class InstanceLock:
    """The lock this process holds; `release()` lets go (also safe if never enforced)."""

    path: Path
    holder: LockHolder
    took_over: LockHolder | None = None  # an instance that ended without letting go
    enforced: bool = True
    note: str = ""  # why it is not enforced, to show the user
    _fd: int | None = None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        holder_file = self.path.with_name(HOLDER_NAME)
        with contextlib.suppress(OSError):
            if _read_holder(holder_file) == self.holder:
                holder_file.unlink()
        with contextlib.suppress(OSError):
            filelock.unlock_descriptor(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _read_holder(path: Path) -> LockHolder | None:
    try:
        return LockHolder.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def acquire_instance_lock(folder: Path | None = None) -> InstanceLock:
    """Take the single-instance lock in `folder` (the config folder by default).

    Raises AlreadyRunning while another Duetto holds it. Never raises for a folder where
    locking is impossible: the lock then comes back unenforced, with a `note`.
    """
    folder = folder or paths.config_dir()
    path = folder / LOCK_NAME
    me = LockHolder.me()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Opened without truncating: a contender must not erase anything of the holder's.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        return InstanceLock(path, me, enforced=False, note=_unenforced(path, exc))
    try:
        locked = filelock.lock_descriptor(fd, blocking=False)
    except OSError as exc:
        os.close(fd)
        return InstanceLock(path, me, enforced=False, note=_unenforced(path, exc))
    holder_file = folder / HOLDER_NAME
    previous = _read_holder(holder_file)
    if not locked:
        os.close(fd)
        raise AlreadyRunning(path, previous)
    lock = InstanceLock(path, me, took_over=previous, _fd=fd)
    # The lock holds without the note; a second instance just cannot say whose it is.
    with contextlib.suppress(OSError):
        write_text_atomic(holder_file, json.dumps(asdict(me)) + "\n")
    return lock


def _unenforced(path: Path, exc: OSError) -> str:
    return (f"Duetto could not check whether it is already running ({path}: "
            f"{exc.strerror or exc}). If it is, close the other window: two at once would "
            "write over each other's settings.")
