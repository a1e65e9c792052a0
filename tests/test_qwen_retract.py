"""Speculative turn-taking: an answer started too early is taken back without a trace."""

from __future__ import annotations

import pytest
import tiny_models
from tiny_models import make_unit, started_backend

from app.model.contract import Control, Decision
from app.model.qwen_omni.cache import one_shot_logits
from app.model.qwen_omni.prompt import Kind

qwen_tiny_factory = tiny_models.qwen_tiny_factory


@pytest.fixture(scope="module")
def backend(qwen_tiny_factory):
    b = started_backend(qwen_tiny_factory(min_answer_tokens=40), max_answer_tokens=48)
    # These tests compare the warm cache with one prefill of the whole conversation,
    # which needs every past turn's audio and frames.
    b.ctx.settle_after_turns = None
    yield b
    b.close()


def _kinds(ctx):
    return [(e.segment.kind, e.segment.turn) for e in ctx.entries]


@pytest.mark.parametrize("finish_first", [False, True], ids=["mid-answer", "after-answer"])
def test_a_retracted_answer_leaves_the_users_turn_open(backend, finish_first):
    for i in range(2):
        list(backend.step(make_unit(i, image=(i == 0), seed=7), Control()))
    before = _kinds(backend.ctx)
    it = backend.step(make_unit(2, image=False, seed=7), Control(turn_ended=True))
    for out in it:
        if out.speech is not None and not finish_first:
            backend.interrupt()
    list(it)
    backend.retract()
    assert _kinds(backend.ctx) == [*before, (Kind.UNIT, before[-1][1])]
    # The user goes on: the new unit joins the same turn, and the cache is exactly a
    # conversation in which the answer never began.
    outs = list(backend.step(make_unit(3, image=False, seed=7), Control()))
    assert [o.decision for o in outs] == [Decision.LISTEN]
    ctx = backend.ctx
    assert ctx.entries[-1].segment.kind is Kind.UNIT
    assert all(e.segment.kind is not Kind.ASSISTANT for e in ctx.entries[len(before) :])
    assert ctx.cache.get_seq_length() == ctx.talker_cache.get_seq_length() == ctx.length
    got = ctx.append(backend._layout.user_close(ctx.entries[-1].segment.turn))
    want = one_shot_logits(backend._loaded.model.thinker, ctx.segments)
    assert (got - want).abs().max().item() < 1e-4
    ctx.rollback_to(len(ctx.entries) - 1)
    # And the turn can still end and be answered.
    outs = list(backend.step(make_unit(4, image=False, seed=7), Control(turn_ended=True)))
    assert outs[-1].decision is Decision.END_OF_TURN
