"""Model families this app can drive: where each one's backend and tiny builder live.

Imported lazily with importlib so that listing families costs nothing, and a family
whose module is missing or broken fails only when it is asked for, with its name.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.model.contract import BackendError


@dataclass(frozen=True)
class Family:
    """One family: `backend`, `tiny_builder` and `layout_check` are "module:attribute" paths.

    `layout_check(folder)`, when set, recognises the family's checkpoints that carry no
    transformers config.json (it raises BackendError for anything else).
    `complete`: False while the family's backend lacks a part users need (MiniCPM-o
    until its speech path lands): it runs from a local folder (its tiny model, tests,
    benchmarks), but its registry entries stay unsupported, so nothing offers to
    download it yet.
    """

    name: str
    backend: str
    tiny_builder: str
    description: str
    layout_check: str = ""
    complete: bool = True


# Only families with a backend in this app.
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
        # PersonaPlex and Kyutai's own releases ship in the moshi package's layout.
        layout_check="app.model.moshi.loader:detect_layout",
    ),
    "minicpm-o": Family(
        name="minicpm-o",
        backend="app.model.minicpm_o.backend:MiniCPMOBackend",
        tiny_builder="app.model.minicpm_o.tiny:build_tiny",
        description="MiniCPM-o 4.5, native full duplex every 1 s, sees the camera, "
                    "speaks in the voice of a recording",
    ),
}


# A model on another machine, served over the duplex wire (app/model/remote/). Not a
# local family: nothing to download, build or recognise in a folder, so known() leaves
# it out; get() finds it, so a conversation loads it like any backend.
REMOTE = Family(
    name="remote",
    backend="app.model.remote.backend:RemoteBackend",
    tiny_builder="",
    description="a model on a server (vLLM-Omni or `duetto serve`) over the duplex "
                "WebSocket protocol",
)


def known() -> list[str]:
    return sorted(FAMILIES)


def is_supported(family: str) -> bool:
    """A family users can download and run in full (see Family.complete)."""
    return family in FAMILIES and FAMILIES[family].complete


def get(family: str) -> Family:
    if family == REMOTE.name:
        return REMOTE
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


def of_folder(folder: Path) -> str:
    """The family of a checkpoint folder, from its small files alone.

    config.json's architecture or model_type names it (checkpoint.py's table); a folder
    in a family's own layout (no transformers config) is asked of that family's
    `layout_check`. Raises BackendError naming what the folder holds when no family fits.
    """
    from app.model.checkpoint import FAMILY_CHECKPOINTS

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BackendError(f"model folder {folder} does not exist",
                           hint="check the path, or build one with `duetto models tiny`")
    config: dict[str, Any] = {}
    try:
        loaded = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass  # no transformers config: a family's own layout may still fit
    architectures = config.get("architectures") or []
    if isinstance(architectures, str):
        architectures = [architectures]
    model_type = config.get("model_type")
    for name in FAMILIES:
        rules = FAMILY_CHECKPOINTS.get(name)
        if rules and (rules.architectures.intersection(architectures)
                      or model_type in rules.model_types):
            return name
    for family in FAMILIES.values():
        if not family.layout_check:
            continue
        try:
            load_object(family.layout_check)(folder)
            return family.name
        except BackendError:
            continue
    what = f"model_type {model_type!r}" if model_type else "no recognisable checkpoint"
    raise BackendError(f"{folder} holds {what}: none of the families {', '.join(known())}",
                       hint="point to a Qwen2.5-Omni, Moshi, PersonaPlex or MiniCPM-o "
                       "checkpoint folder")
