"""The README says what the app does by default (it once promised that every
conversation is recorded while recording was off by default)."""

from __future__ import annotations

from pathlib import Path

from app.config.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_the_readme_tells_the_truth_about_recording():
    prose = " ".join(README.split())
    if Settings().conversation.record:
        assert "on by default" in prose
    else:
        assert "Every conversation is recorded" not in prose
        assert "(Settings → Conversation; off by default)" in prose
