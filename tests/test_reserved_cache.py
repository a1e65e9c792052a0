"""The reserved key/value cache: same results as transformers' DynamicCache, memory
claimed once (no buffer is ever re-allocated while a conversation stays in budget)."""

from __future__ import annotations

import logging

import pytest
import tiny_models
import torch
from tiny_models import make_unit, started_backend

from app.model.contract import BackendError, Control
from app.model.qwen_omni.cache import WarmContext, reserved_tokens
from app.model.reserved_cache import ReservedLayer, reserved_bytes, reserved_cache

qwen_tiny_factory = tiny_models.qwen_tiny_factory
qwen_tiny = tiny_models.qwen_tiny

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_lm():
    """A tiny random Qwen2 decoder (grouped-query attention, as Qwen2.5-Omni's thinker)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512)
    return Qwen2ForCausalLM(config).eval()


def _buffers(cache) -> list[int]:
    return [p for layer in cache.layers
            for p in (layer._key_buffer.data_ptr(), layer._value_buffer.data_ptr())]


@torch.no_grad()
def _run(model, cache, script) -> list[torch.Tensor]:
    """Feed chunks of ids and crops ("crop", n) through `model`; logits after each chunk."""
    logits = []
    for step in script:
        if step[0] == "crop":
            cache.crop(-step[1])
            continue
        ids = torch.tensor([step])
        start = cache.get_seq_length()
        out = model(input_ids=ids, cache=cache, use_cache=True,
                    position_ids=torch.arange(start, start + ids.shape[1])[None])
        logits.append(out.logits[0, -1])
    return logits


SCRIPT = [
    list(range(1, 20)),  # a prompt
    list(range(30, 42)),  # a unit
    [50], [51], [52],  # an answer, token by token
    ("crop", 3),  # retracted
    list(range(60, 70)),  # the user goes on
    [71], [72],
]


def test_same_logits_as_a_dynamic_cache_and_no_reallocation(tiny_lm):
    from transformers import DynamicCache

    reference = _run(tiny_lm, DynamicCache(), SCRIPT)
    cache = reserved_cache(tiny_lm.config.num_hidden_layers, capacity=64)
    first = _run(tiny_lm, cache, SCRIPT[:1])
    buffers = _buffers(cache)
    rest = _run(tiny_lm, cache, SCRIPT[1:])
    for got, want in zip(first + rest, reference, strict=True):
        assert (got - want).abs().max().item() < TOL
    assert _buffers(cache) == buffers  # every later write landed in the same memory
    assert cache.get_seq_length() == 19 + 12 + 3 - 3 + 10 + 2
    layer = cache.layers[0]
    assert layer.keys.shape[-2] == cache.get_seq_length()
    assert layer.keys.data_ptr() == layer._key_buffer.data_ptr()  # a view, not a copy


def test_reservation_is_claimed_by_the_first_forward_pass(tiny_lm):
    cache = reserved_cache(tiny_lm.config.num_hidden_layers, capacity=100)
    assert reserved_bytes(cache) == 0 and cache.get_seq_length() == 0
    _run(tiny_lm, cache, [[1, 2, 3]])
    cfg = tiny_lm.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_layer = 2 * cfg.num_key_value_heads * 100 * head_dim * 4  # keys + values, float32
    claimed = cfg.num_hidden_layers * per_layer
    assert reserved_bytes(cache) == claimed
    cache.reset()  # a new conversation keeps the reservation
    assert cache.get_seq_length() == 0 and reserved_bytes(cache) == claimed


def test_a_context_past_its_reservation_grows_and_says_so(tiny_lm, caplog):
    from transformers import DynamicCache

    reference = _run(tiny_lm, DynamicCache(), SCRIPT)
    cache = reserved_cache(tiny_lm.config.num_hidden_layers, capacity=8)
    with caplog.at_level(logging.WARNING, logger="app.model.reserved_cache"):
        got = _run(tiny_lm, cache, SCRIPT)
    for a, b in zip(got, reference, strict=True):
        assert (a - b).abs().max().item() < TOL
    assert "outgrew its reserved" in caplog.text
    assert cache.layers[0].capacity >= cache.get_seq_length()


def test_layer_rejects_what_it_cannot_do():
    with pytest.raises(ValueError):
        ReservedLayer(0)
    layer = ReservedLayer(4)
    with pytest.raises(ValueError):
        layer.crop(2)  # transformers 5 crops by a negative count


def test_a_conversation_keeps_its_memory_from_the_start(qwen_tiny):
    """Units, an answer, a barge-in and a retraction all write into the buffers reserved
    when the conversation started: the context's memory is flat from its first unit."""
    backend = started_backend(qwen_tiny, token_budget=4000)
    ctx = backend.ctx
    thinker_tokens, talker_tokens = reserved_tokens(4000, backend.answer_config.max_codes)
    assert ctx.cache.layers[0].capacity == thinker_tokens
    assert ctx.talker_cache.layers[0].capacity == talker_tokens
    claimed = reserved_bytes(ctx.cache) + reserved_bytes(ctx.talker_cache)
    buffers = _buffers(ctx.cache) + _buffers(ctx.talker_cache)
    assert claimed > 0
    for i in range(3):
        list(backend.step(make_unit(i, image=True), Control()))
    answer = backend.step(make_unit(3), Control(turn_ended=True))
    for n, _ in enumerate(answer):
        if n == 6:
            break
    backend.heard("")
    list(backend.step(make_unit(4), Control(turn_ended=True)))
    assert ctx.length > 100
    assert reserved_bytes(ctx.cache) + reserved_bytes(ctx.talker_cache) == claimed
    assert _buffers(ctx.cache) + _buffers(ctx.talker_cache) == buffers
    backend.close()


def test_a_context_that_does_not_fit_fails_at_start_with_a_clear_message(
        qwen_tiny, monkeypatch):
    from app.model import reserved_cache as module

    def no_memory(states, capacity):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(module.ReservedLayer, "_buffer_like", staticmethod(no_memory))
    with pytest.raises(BackendError) as err:
        started_backend(qwen_tiny, token_budget=4000)
    assert "does not fit" in str(err.value) and "4000 tokens" in str(err.value)
    assert err.value.hint


def test_warm_context_reset_keeps_the_reservation(qwen_tiny):
    from transformers import AutoTokenizer, Qwen2_5OmniForConditionalGeneration

    from app.model.qwen_omni.prompt import Layout

    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(qwen_tiny).eval()
    layout = Layout(AutoTokenizer.from_pretrained(qwen_tiny))
    ctx = WarmContext(model, token_budget=500)
    ctx.append(layout.system("Hi."))
    buffers = _buffers(ctx.cache)
    ctx.reset()
    assert ctx.length == 0 and ctx.cache.get_seq_length() == 0
    ctx.append(layout.system("Hi again."))
    assert _buffers(ctx.cache) == buffers


def test_compact_moves_kept_ranges_down_in_place():
    from app.model.reserved_cache import Move

    layer = ReservedLayer(16)
    keys = torch.arange(10.0).view(1, 1, 10, 1)
    layer.update(keys, -keys)
    buffer = layer._key_buffer.data_ptr()
    # Keep tokens 0-1 and 4-9 (dropping 2-3), the second range shifted by 2 positions;
    # source and destination overlap.
    layer.compact([Move(4, 2, 6, shift=2)], new_length=8,
                  rotate=lambda k, shift: k + 100 * shift)
    assert layer.get_seq_length() == 8 and layer._key_buffer.data_ptr() == buffer
    assert layer.keys.flatten().tolist() == [0, 1, 204, 205, 206, 207, 208, 209]
    assert layer.values.flatten().tolist() == [0, -1, -4, -5, -6, -7, -8, -9]
    with pytest.raises(ValueError):
        layer.compact([Move(0, 3, 2)], new_length=8)
