"""Tiny random-weight checkpoints of each family, built offline in about a second.

Tests and the hardware self-check load them through the same code as real weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.model import families


def build_tiny(family: str, folder: Path, **options: Any) -> Path:
    """Write a tiny checkpoint of `family` into `folder` and return the folder.

    `options` go to the family's builder (Qwen2.5-Omni: min_answer_tokens, seed).
    Raises BackendError for an unknown family, listing the known ones.
    """
    builder = families.tiny_builder(family)
    return Path(builder(Path(folder), **options))
