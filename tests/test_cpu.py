"""The model leaves a core for the audio threads."""

from __future__ import annotations

import torch

from app.flow.cpu import limit_model_threads, model_threads


def test_every_core_but_one_and_never_none():
    assert model_threads(16) == 15
    assert model_threads(2) == 1
    assert model_threads(1) == 1


def test_the_limit_is_applied_to_torch():
    before = torch.get_num_threads()
    try:
        assert limit_model_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
