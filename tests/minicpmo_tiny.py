"""One tiny MiniCPM-o checkpoint per test session (about 10 s to build on 2 cores)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path


@functools.cache
def tiny_folder() -> Path:
    from app.model.minicpm_o.tiny import build_tiny

    root = Path(tempfile.mkdtemp(prefix="duetto-minicpmo-"))
    return build_tiny(root / "tiny", seed=0)


@functools.cache
def tiny_loaded():
    from app.model.minicpm_o.loader import load_minicpmo

    return load_minicpmo(tiny_folder())
