"""One tiny MiniCPM-o checkpoint per test session (about 10 s to build on 2 cores).

It is 176 MB (the real 151,748-token vocabulary), so it is removed when the session ends.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def tiny_folder() -> Path:
    from app.model.minicpm_o.tiny import build_tiny

    root = Path(tempfile.mkdtemp(prefix="duetto-minicpmo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny(root / "tiny", seed=0)


@functools.cache
def tiny_loaded():
    from app.model.minicpm_o.loader import load_minicpmo

    return load_minicpmo(tiny_folder())


def built_as(builder_meta: dict) -> bool:
    """Whether the shared tiny checkpoint was built with the arguments a golden records
    (its weights follow from them; a test instrument's script beside them changes none)."""
    import json

    built = json.loads((tiny_folder() / "duetto.json").read_text())
    return {k: built.get(k) for k in builder_meta} == builder_meta
