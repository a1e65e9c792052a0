"""Loading a model for a conversation: a load that fails or is cancelled part-way (the
progress callback raises) closes the backend it built, and once its exception is gone
`release_memory()` leaves none of its weights alive."""

from __future__ import annotations

import gc

import pytest
import tiny_models

from app.flow.conversation import ConversationOptions, load_backend, release_memory
from app.model.contract import ModelSource, Persona
from app.model.qwen_omni.backend import QwenOmniBackend

qwen_tiny = tiny_models.qwen_tiny
qwen_tiny_factory = tiny_models.qwen_tiny_factory


class _Cancelled(Exception):
    pass


def _models_alive() -> int:
    return sum(1 for o in gc.get_objects()
               if type(o).__name__ == "Qwen2_5OmniForConditionalGeneration")


def test_a_load_cancelled_at_its_last_step_closes_and_frees_what_it_loaded(qwen_tiny,
                                                                           monkeypatch):
    seen: list[str] = []  # progress steps and closes, in order
    close = QwenOmniBackend.close
    monkeypatch.setattr(QwenOmniBackend, "close",
                        lambda self: (seen.append("close"), close(self))[-1])
    options = ConversationOptions(model=ModelSource(local_dir=qwen_tiny),
                                  persona=Persona("t", "."))

    def progress(what: str, fraction: float) -> None:
        seen.append(what)
        if what == "loaded":  # the weights are in: the user's cancel arrives now
            raise _Cancelled()

    release_memory()
    before = _models_alive()
    with pytest.raises(_Cancelled):
        load_backend(options, progress)
    assert seen[-2:] == ["loaded", "close"]  # closed after it was cancelled
    release_memory()
    assert _models_alive() == before


def test_a_load_that_completes_is_not_closed(qwen_tiny, monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(QwenOmniBackend, "close", lambda self: seen.append("close"))
    options = ConversationOptions(model=ModelSource(local_dir=qwen_tiny),
                                  persona=Persona("t", "."))
    backend = load_backend(options, lambda what, _f: seen.append(what))
    assert backend.spec.voices and seen[-1] == "loaded"  # not closed after loading
