"""Model families this app can drive: where each one's backend and tiny builder live.

Imported lazily with importlib so that listing families costs nothing, and a family
whose module is missing or broken fails only when it is asked for, with its name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from app.model.contract import BackendError


@dataclass(frozen=True)
class Family:
    """One family: `backend` and `tiny_builder` are "package.module:attribute" paths."""

    name: str
    backend: str
    tiny_builder: str
    description: str


# Only families with a backend in this app. MiniCPM-o ("minicpm-o") joins when its backend
# exists; the registry still lists its checkpoint, marked as not supported yet.
FAMILIES: dict[str, Family] = {
    "qwen2.5-omni": Family(
        name="qwen2.5-omni",
        backend="app.model.qwen_omni.backend:QwenOmniBackend",
        tiny_builder="app.model.qwen_omni.tiny:build_tiny",
        description="Qwen2.5-Omni 3B/7B, turn-based with runtime duplex",
    ),
    "moshi": Family(
        name="moshi",
        backend="app.model.moshi.backend:MoshiBackend",
        tiny_builder="app.model.moshi.tiny:build_tiny",
        description="Moshi / PersonaPlex 7B, native full duplex every 80 ms",
    ),
}


def known() -> list[str]:
    return sorted(FAMILIES)


def is_supported(family: str) -> bool:
    return family in FAMILIES


def get(family: str) -> Family:
    try:
        return FAMILIES[family]
    except KeyError:
        raise BackendError(
            f"unknown model family {family!r}",
            hint=f"known families: {', '.join(known())}",
        ) from None


def load_object(path: str) -> Any:
    """Import "package.module:attribute"; a failure becomes a BackendError naming it."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(
            f"{module_name} cannot be imported ({exc})",
            hint="this family's code is missing from the install: reinstall Duetto",
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise BackendError(
            f"{module_name} has no {attribute}",
            hint="the install is inconsistent: reinstall Duetto",
        ) from None


def backend_class(family: str) -> type:
    return load_object(get(family).backend)


def tiny_builder(family: str) -> Any:
    return load_object(get(family).tiny_builder)
