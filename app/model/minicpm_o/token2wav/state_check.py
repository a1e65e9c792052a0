"""How a weights file's tensors differ from a module tree's (the flow's and the vocoder's
strict loads say it, each in its own words)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StateDifferences:
    """Names sorted; `reshaped` are in both with another shape (file's shape in `got`)."""

    missing: list[str]
    unexpected: list[str]
    reshaped: list[str]
    want: dict[str, tuple[int, ...]]
    got: dict[str, tuple[int, ...]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.reshaped)


def state_differences(model: nn.Module, state: Mapping[str, torch.Tensor]) -> StateDifferences:
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    return StateDifferences(
        missing=sorted(want.keys() - got.keys()),
        unexpected=sorted(got.keys() - want.keys()),
        reshaped=sorted(k for k in want.keys() & got.keys() if want[k] != got[k]),
        want=want, got=got)
