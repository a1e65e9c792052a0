"""Where Duetto keeps what a user owns: settings, personas, recordings, models."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

APP_NAME = "duetto"


def assets_dir() -> Path:
    """What the app ships inside its package (persona presets, icons, the self-check's
    voice): DUETTO_ASSETS_DIR, else `app/assets` found through the package itself, so an
    installed wheel finds its own copy wherever it is run from."""
    override = os.environ.get("DUETTO_ASSETS_DIR")
    if override:
        return Path(override)
    shipped = resources.files("app") / "assets"
    # Qt's style sheet and soundfile need real paths. The app is installed as files (a
    # wheel, an editable checkout); a zipped import would be a packaging mistake.
    if not isinstance(shipped, Path):
        raise RuntimeError(f"Duetto's assets are not files on disk ({shipped!r}): "
                           "install Duetto from its wheel, not as a zip")
    return shipped


def _platformdirs():
    # Imported when a folder is asked for: the model code imports this module, and runs
    # where only torch and transformers are installed (the GPU check) ask for none.
    import platformdirs

    return platformdirs


def config_dir() -> Path:
    """Settings and the user's own personas."""
    override = os.environ.get("DUETTO_CONFIG_DIR")
    return Path(override) if override else Path(_platformdirs().user_config_dir(APP_NAME))


def data_dir() -> Path:
    """Session recordings and logs."""
    override = os.environ.get("DUETTO_DATA_DIR")
    return Path(override) if override else Path(_platformdirs().user_data_dir(APP_NAME))


def models_dir() -> Path:
    """Downloaded checkpoints. Large, so it may be moved with DUETTO_MODELS_DIR."""
    override = os.environ.get("DUETTO_MODELS_DIR")
    if override:
        return Path(override)
    return Path(_platformdirs().user_cache_dir(APP_NAME)) / "models"
