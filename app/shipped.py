"""The files Duetto reads from its own package, and a check that all of them are there.

Everything the app reads at run time ships inside the `app` package and is found through
the package (importlib.resources), never through a checkout: persona presets and icons
(app/assets), the self-check's recorded voice, the duplex benchmark's scenarios
(app/bench/scenarios). The end-of-turn model's weights come from the `pipecat-ai` wheel.
`duetto doctor` runs `check()`; a wheel built without its package data fails it by name.
No Qt here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app import paths

# Single files the app opens by name, relative to the assets folder.
REQUIRED_ASSETS: tuple[tuple[str, str], ...] = (
    ("icons/chevron-down.svg", "the drop-down arrow of every list in the window"),
    ("self-check/speech.flac", "the self-check's recorded voice"),
)


@dataclass(frozen=True)
class ShippedFile:
    ok: bool
    text: str


def _required(assets: Path) -> list[ShippedFile]:
    found = []
    for relative, purpose in REQUIRED_ASSETS:
        path = assets / relative
        if path.is_file() and path.stat().st_size > 0:
            found.append(ShippedFile(True, f"{relative} ({purpose})"))
        else:
            found.append(ShippedFile(False, f"{relative} is missing from {assets} ({purpose})"))
    return found


def _personas(assets: Path) -> list[ShippedFile]:
    from app.config import personas

    folder = assets / "personas"
    library = personas.load_all(presets=folder, users=folder / "no-user-personas-here")
    found = [ShippedFile(False, problem.describe()) for problem in library.problems]
    presets = [p for p in library.personas if p.preset]
    if presets:
        found.append(ShippedFile(True, f"{len(presets)} persona presets in {folder}"))
    return found


def _scenarios() -> list[ShippedFile]:
    from app.bench import duplex_scenario

    found = []
    for which in duplex_scenario.SETS:
        folder = duplex_scenario.builtin_dir(which)
        try:
            scenarios = duplex_scenario.load_dir(folder)
        except duplex_scenario.ScenarioError as exc:
            found.append(ShippedFile(False, f"duplex benchmark scenarios ({which}): {exc}"))
            continue
        found.append(ShippedFile(True, f"{len(scenarios)} duplex benchmark scenarios "
                                       f"({which} set) in {folder}"))
    return found


def _turn_model() -> list[ShippedFile]:
    from app.flow import turn_end

    try:
        path = turn_end.bundled_model_path()
    except turn_end.TurnModelUnavailable as exc:
        return [ShippedFile(False, f"end-of-turn model: {exc} (the silence timer still works)")]
    return [ShippedFile(True, f"end-of-turn model {path.name}")]


def check() -> list[ShippedFile]:
    """One line per shipped file or folder: there (ok) or missing (what it is for)."""
    try:
        assets = paths.assets_dir()
    except RuntimeError as exc:
        return [ShippedFile(False, str(exc))]
    parts: list[Callable[[], list[ShippedFile]]] = [
        lambda: _required(assets), lambda: _personas(assets), _scenarios, _turn_model,
    ]
    found: list[ShippedFile] = []
    for part in parts:
        found.extend(part())
    return found
