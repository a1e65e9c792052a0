"""Starts the app from its environment, with an environment of variables free of the
launcher's own (a frozen launcher points the library path and Qt's plugin path into its
bundle; the app must load its own Qt and libraries, not the launcher's)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def clean_environment(environ: Mapping[str, str], bundle: str | None) -> dict[str, str]:
    """The variables without the frozen launcher's: PyInstaller keeps the user's own
    LD_LIBRARY_PATH as LD_LIBRARY_PATH_ORIG (and DYLD_… on macOS)."""
    env = dict(environ)
    for name in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
        original = env.pop(name + "_ORIG", None)
        if bundle is not None:
            if original is not None:
                env[name] = original
            else:
                env.pop(name, None)
    if bundle is not None:
        for name in [k for k, v in env.items() if bundle in v]:
            del env[name]
    for name in ("PYTHONHOME", "PYTHONPATH"):
        env.pop(name, None)
    return env


def command(python: Path, args: Sequence[str]) -> list[str]:
    return [str(python), "-m", "app", *args]


def start_app(python: Path, args: Sequence[str]) -> int:
    """Replace the launcher with the app where the system allows it (the app then owns the
    terminal and its signals), else run it and hand back its exit status."""
    env = clean_environment(os.environ, getattr(sys, "_MEIPASS", None))
    argv = command(python, args)
    if sys.platform != "win32":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(argv[0], argv, env)
    # Windows: a launcher started from the Start menu has no console; neither should the
    # app's Python open one behind its window.
    flags = subprocess.CREATE_NO_WINDOW if sys.stdout is None else 0  # type: ignore[attr-defined]
    return subprocess.run(argv, env=env, creationflags=flags).returncode
