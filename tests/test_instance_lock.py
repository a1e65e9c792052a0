"""One Duetto at a time: a second instance is told who runs and what to do; the lock of
one that died (kill -9) is taken over by the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from app import paths
from app.instance_lock import (
    HOLDER_NAME,
    AlreadyRunning,
    acquire_instance_lock,
)

HOLD = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from app.instance_lock import acquire_instance_lock
    lock = acquire_instance_lock(Path(sys.argv[1]))
    print(lock.enforced, lock.took_over.pid if lock.took_over else None, flush=True)
    threading.Event().wait()
    """
)
TRY = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from app.instance_lock import AlreadyRunning, acquire_instance_lock
    try:
        lock = acquire_instance_lock(Path(sys.argv[1]))
    except AlreadyRunning as exc:
        print("refused", exc.holder.pid if exc.holder else None)
        print(exc)
    else:
        print("acquired", lock.took_over.pid if lock.took_over else None)
    """
)


def _env():
    return dict(os.environ, PYTHONPATH=os.getcwd())


def _try(folder) -> list[str]:
    done = subprocess.run([sys.executable, "-c", TRY, str(folder)], capture_output=True,
                          text=True, env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.timeout(60)
def test_a_second_instance_is_refused_with_who_runs_and_what_to_do(tmp_path):
    lock = acquire_instance_lock()
    assert lock.held and lock.enforced and lock.path.parent == paths.config_dir()
    holder = json.loads((paths.config_dir() / HOLDER_NAME).read_text())
    assert holder["pid"] == os.getpid()
    first, message = _try(paths.config_dir())
    assert first == f"refused {os.getpid()}"
    assert f"process {os.getpid()} on this computer" in message
    assert "already running" in message and "close it" in message
    # In this process too (a second window from the same interpreter).
    with pytest.raises(AlreadyRunning):
        acquire_instance_lock()
    lock.release()
    assert not (paths.config_dir() / HOLDER_NAME).exists()
    assert _try(paths.config_dir()) == ["acquired None"]  # a clean ending leaves nothing


@pytest.mark.timeout(60)
def test_the_lock_of_an_instance_killed_with_kill_9_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().split() == ["True", "None"]
        assert _try(tmp_path)[0] == f"refused {holder.pid}"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    # The process is gone, its lock with it; its note is still there, and says whose.
    assert json.loads((tmp_path / HOLDER_NAME).read_text())["pid"] == holder.pid
    lock = acquire_instance_lock(tmp_path)
    assert lock.held and lock.took_over is not None and lock.took_over.pid == holder.pid
    assert json.loads((tmp_path / HOLDER_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_folder_where_no_lock_can_be_taken_does_not_stop_the_app(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    lock = acquire_instance_lock(blocker / "config")
    assert not lock.enforced and not lock.held
    assert "could not check whether it is already running" in lock.note
    lock.release()  # harmless


def test_a_damaged_holder_note_does_not_matter(tmp_path):
    (tmp_path / HOLDER_NAME).write_bytes(b"\xff\xfe not json")
    lock = acquire_instance_lock(tmp_path)
    assert lock.held and lock.took_over is None
    lock.release()
