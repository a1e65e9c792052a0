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
