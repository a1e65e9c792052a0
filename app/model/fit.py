"""Before a load: does the plan fit the free memory, and which context does the app take.

Called by the loaders before a byte of weights moves. A context the user asked for
that does not fit is refused with what would fit instead; without one, the longest
context that fits is chosen and said (`Sized.note`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from app.model import checkpoint
from app.model.contract import Quant
from app.model.memory_plan import (
    Plan,
    Planner,
    longest_context,
    min_context,
    refusal,
    size_text,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sized:
    plan: Plan
    free_bytes: int
    note: str  # what was chosen and why, for the log and the UI


def where(device: str) -> str:
    return f"the GPU ({device})" if torch.device(device).type == "cuda" else "this machine's RAM"


def size(planner: Planner, q: Quant, context: int | None, device: str,
         free: int | None = None) -> Sized:
    """The plan to load under `q` on `device`, or BackendError when none fits.

    `context` None: the longest the device's free memory holds (up to the model's
    maximum). `free`: the free bytes (default: asked of the device now).
    """
    free = checkpoint.available_bytes(device) if free is None else int(free)
    place = where(device)
    if context is not None:
        plan = planner.plan(q, context)
        if plan.total_bytes > free:
            raise refusal(planner, plan, free, place)
        note = (f"context: {plan.context} {plan.context_unit} as asked; the plan needs "
                f"{size_text(plan.total_bytes)} of the {size_text(free)} free on {place}")
        return Sized(plan, free, note)
    ctx = longest_context(planner, q, free)
    if ctx is None:
        raise refusal(planner, planner.plan(q, min_context(planner.family)), free, place)
    plan = planner.plan(q, ctx)
    longest = "the model's longest" if ctx == plan.max_context else "the longest that fits"
    note = (f"context: {ctx} {plan.context_unit}, {longest} ({size_text(plan.total_bytes)} "
            f"of the {size_text(free)} free on {place})")
    log.info(note)
    return Sized(plan, free, note)
