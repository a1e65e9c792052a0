"""Shared test setup: Qt runs offscreen, user folders live in a temp dir per test."""

from __future__ import annotations

import os

import pytest

# Before any Qt import: tests never need a display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _user_folders(tmp_path, monkeypatch):
    """Keep settings, recordings and models of tests out of the real user folders."""
    monkeypatch.setenv("DUETTO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("DUETTO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUETTO_MODELS_DIR", str(tmp_path / "models"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module (`pytestmark = pytest.mark.usefixtures(...)`).

    Tiny models run hundreds of small ops per chunk: on a busy 2-core machine torch's
    threads waiting on each other cost far more than they share (8x to 37x measured for
    the tiny MiniCPM-o decoder, flow and vocoder on the dev box), as the benches know.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
