"""Warm prefill and trimming of the Qwen2.5-Omni context, against one full prefill."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import make_unit, started_backend

from app.model.contract import Control
from app.model.qwen_omni.cache import WarmContext, one_shot_logits
from app.model.qwen_omni.features import AudioFeaturizer, ImagePatcher, audio_token_count
from app.model.qwen_omni.prompt import Kind, Layout

# The session-wide tiny model fixtures.
qwen_tiny_factory = tiny_models.qwen_tiny_factory
qwen_tiny = tiny_models.qwen_tiny

TOL = 1e-4


@pytest.fixture(scope="module")
def model_and_layout(qwen_tiny):
    from transformers import AutoTokenizer, Qwen2_5OmniForConditionalGeneration

    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(qwen_tiny).eval()
    return model, Layout(AutoTokenizer.from_pretrained(qwen_tiny))


def _conversation(layout: Layout, n_units: int, turn: int = 1, seed: int = 0):
    feat, patch = AudioFeaturizer(), ImagePatcher()
    segs = [layout.user_open(turn)]
    for i in range(n_units):
        u = make_unit(i, image=(i % 2 == 0), seed=seed + turn)
        image = patch(u.frames[0].pixels) if u.frames else None
        segs.append(layout.unit(turn, feat(u.audio, 16000), image))
    return segs


def test_audio_tokens_per_second():
    # 1 s at 16 kHz: 100 mel frames -> 50 after the conv -> 25 tokens (Qwen's 25 Hz).
    assert audio_token_count(100) == 25
    feats = AudioFeaturizer()(np.zeros(16000, np.float32), 16000)
    assert feats.features.shape == (1, 128, 100) and feats.n_tokens == 25


def test_per_unit_prefill_equals_one_full_prefill(model_and_layout):
    model, layout = model_and_layout
    ctx = WarmContext(model)
    segs = [layout.system("Be kind."), *_conversation(layout, 4), layout.user_close(1)]
    assert any(s.image is not None for s in segs[2:])  # units with a new image
    for seg in segs:
        chunked = ctx.append(seg)
    full = one_shot_logits(model.thinker, segs)
    assert (chunked - full).abs().max().item() < TOL
    # Both caches hold the same count of tokens at segment boundaries.
    assert ctx.cache.get_seq_length() == ctx.talker_cache.get_seq_length() == ctx.length


def test_many_segments_per_pass_equal_one_pass_per_segment(model_and_layout):
    """extend() packs whole segments into a few passes (after a trim): same logits,
    same positions and lengths as prefilling them one by one."""
    model, layout = model_and_layout
    segs = [layout.system("Be kind."), *_conversation(layout, 5),
            layout.user_close(1), layout.assistant(1, layout.encode("ok"), "ok"),
            *_conversation(layout, 3, turn=2)]
    one_by_one = WarmContext(model)
    for seg in segs:
        want = one_by_one.append(seg)
    packed = WarmContext(model)
    chunk = 3 * segs[2].length  # several passes of a few segments each, some with images
    got = packed.extend(segs, chunk_tokens=chunk)
    assert (got - want).abs().max().item() < TOL
    assert [(e.end_len, e.end_pos) for e in packed.entries] == [
        (e.end_len, e.end_pos) for e in one_by_one.entries]
    assert packed.cache.get_seq_length() == packed.talker_cache.get_seq_length() == packed.length
    # The mirrored talker's cache holds the same keys and values too.
    for a, b in zip(packed.talker_cache.layers, one_by_one.talker_cache.layers, strict=True):
        assert (a.keys - b.keys).abs().max().item() < TOL
        assert (a.values - b.values).abs().max().item() < TOL


def test_library_positions_would_be_wrong_for_a_new_image(model_and_layout):
    """Guards the reason explicit positions exist: the library's own are off for images."""
    model, layout = model_and_layout
    segs = [layout.system(""), *_conversation(layout, 2), layout.user_close(1)]
    full = one_shot_logits(model.thinker, segs)
    ctx = WarmContext(model, mirror_talker=False)
    for seg in segs[:-1]:
        ctx.append(seg)
    wrong = model.thinker(input_ids=segs[-1].ids, cache=ctx.cache, use_cache=True)
    good = WarmContext(model, mirror_talker=False)
    for seg in segs:
        logits = good.append(seg)
    assert (logits - full).abs().max().item() < TOL
    assert (wrong.logits[0, -1] - full).abs().max().item() > TOL


def _trimmed_context(model, layout, shift_on_trim: bool):
    system = layout.system("Short.")

    def turn_segments(turn):
        return [
            *_conversation(layout, 2, turn=turn),
            layout.user_close(turn),
            layout.assistant(turn, layout.encode("ok then"), "ok then"),
        ]

    turn_len = sum(s.length for s in turn_segments(1))
    budget = system.length + int(2.5 * turn_len)
    ctx = WarmContext(model, token_budget=budget, shift_on_trim=shift_on_trim)
    ctx.append(system)
    for turn in (1, 2, 3):
        for seg in turn_segments(turn):
            ctx.trim(extra=seg.length)
            ctx.append(seg)
    # The open turn: its opener and units, trimmed unit by unit once past turns are gone.
    for seg in _conversation(layout, 3, turn=4):
        ctx.trim(extra=seg.length)
        ctx.append(seg)
    ctx.trim(extra=turn_len // 2)
    assert ctx.trims >= 2
    assert ctx.entries[0].segment is system  # the system prompt is kept
    assert ctx.length + turn_len // 2 <= budget
    return ctx


@pytest.mark.parametrize("shift_on_trim", [True, False])
def test_trimming_keeps_what_a_fresh_prefill_would_place(model_and_layout, shift_on_trim):
    """Kept segments sit at a fresh prefill's positions and cache offsets, either way."""
    model, layout = model_and_layout
    ctx = _trimmed_context(model, layout, shift_on_trim)
    kept = ctx.segments
    assert kept[1].kind is Kind.USER_OPEN and kept[1].turn > 1  # whole turns were dropped
    fresh = WarmContext(model)
    fresh.extend(kept)
    assert [(e.end_len, e.end_pos) for e in ctx.entries] == [
        (e.end_len, e.end_pos) for e in fresh.entries]
    assert ctx.cache.get_seq_length() == ctx.talker_cache.get_seq_length() == ctx.length
    # The first layer's keys and values depend on each token alone (its embedding, or
    # its own unit's encoder output) and on its position: equal to a fresh prefill's.
    got, want = ctx.cache.layers[0], fresh.cache.layers[0]
    assert (got.keys - want.keys).abs().max().item() < TOL
    assert (got.values - want.values).abs().max().item() < TOL
    probe = _conversation(layout, 1, turn=9)[1]
    trimmed = ctx.append(probe)
    assert torch.isfinite(trimmed).all() and fresh.append(probe).shape == trimmed.shape
    assert fresh.next_pos == ctx.next_pos
    if not shift_on_trim:  # prefilled again: exactly a fresh conversation
        reference = one_shot_logits(model.thinker, [*kept, probe])
        assert (trimmed - reference).abs().max().item() < TOL


def test_a_shifted_trim_moves_the_talkers_cache_with_the_thinkers(model_and_layout):
    model, layout = model_and_layout
    ctx = _trimmed_context(model, layout, shift_on_trim=True)

    def values_by_segment(cache) -> dict[int, torch.Tensor]:
        starts = [0] + [e.end_len for e in ctx.entries[:-1]]
        values = cache.layers[0].values
        return {id(e.segment): values[:, :, s : e.end_len].clone()
                for s, e in zip(starts, ctx.entries, strict=True)}

    before = values_by_segment(ctx.talker_cache), values_by_segment(ctx.cache)
    n_before = len(ctx.entries)
    ctx.trim(extra=ctx.token_budget)  # drop all it can: the open turn keeps its opener
    assert len(ctx.entries) < n_before
    assert ctx.talker_cache.get_seq_length() == ctx.cache.get_seq_length() == ctx.length
    after = values_by_segment(ctx.talker_cache), values_by_segment(ctx.cache)
    # Values carry no position: each kept segment's values are its old ones, moved down.
    for old, new in zip(before, after, strict=True):
        assert new.keys() <= old.keys()
        for key, values in new.items():
            assert torch.equal(values, old[key])


@pytest.mark.parametrize("which", ["thinker", "talker"])
def test_rotary_shift_places_keys_as_the_model_would(model_and_layout, which):
    """R(-s)·R(p)·k = R(p - s)·k with the model's own rotary module, for multimodal
    positions whose time, height and width differ (image tokens)."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import apply_rotary_pos_emb

    from app.model.qwen_omni.cache import RotaryShift

    model, _ = model_and_layout
    shift = RotaryShift.of(getattr(model, which))
    assert shift is not None
    n = 12
    base = torch.arange(n)
    positions = torch.stack([40 + base // 4, 44 + base % 3, 47 + base % 4])[:, None]  # (3,1,n)
    keys = torch.randn(1, 2, n, shift.rotary.inv_freq.numel() * 2)
    cos, sin = shift.rotary(keys, positions)
    _, placed = apply_rotary_pos_emb(keys, keys, cos, sin)
    cos, sin = shift.rotary(keys, positions - 17)
    _, want = apply_rotary_pos_emb(keys, keys, cos, sin)
    assert (shift(placed, 17) - want).abs().max().item() < 1e-5


def test_backend_trims_a_long_session(qwen_tiny):
    backend = started_backend(qwen_tiny, token_budget=500, max_answer_tokens=10)
    for turn in range(3):
        for i in range(3):
            list(backend.step(make_unit(i, image=(i == 0), seed=turn), Control()))
        outs = list(backend.step(make_unit(3, image=False, seed=turn), Control(turn_ended=True)))
        assert outs[-1].decision is not None
    ctx = backend.ctx
    assert ctx.trims >= 1 and ctx.length <= 500
    assert ctx.entries[0].segment.kind is Kind.SYSTEM
    fresh = WarmContext(backend._loaded.model)
    fresh.extend(ctx.segments)
    assert [(e.end_len, e.end_pos) for e in ctx.entries] == [
        (e.end_len, e.end_pos) for e in fresh.entries]


def test_trims_happen_while_the_user_talks_not_when_the_answer_is_due(qwen_tiny):
    """A trim prefills the kept context again; at the unit that ends a turn (or at the
    answer's start) that time would be added to the answer's delay."""
    budget = 700
    backend = started_backend(qwen_tiny, token_budget=budget, max_answer_tokens=10)
    ctx = backend.ctx
    trims_at_turn_end = []
    trim = ctx.trim

    def watched_trim(extra: int = 0) -> int:
        dropped = trim(extra)
        if dropped:
            trims_at_turn_end.append(turn_ends)
        return dropped

    ctx.trim = watched_trim
    for turn in range(6):
        for i in range(4):
            turn_ends = i == 3
            outs = list(backend.step(make_unit(i, image=(i % 2 == 0), seed=turn),
                                     Control(turn_ended=turn_ends)))
            if not turn_ends:
                assert ctx.length + backend._answer_room() <= budget  # room for an answer
        assert outs[-1].decision is not None
    assert ctx.trims >= 2
    assert not any(trims_at_turn_end)


def test_features_are_kept_in_the_models_dtype_losing_nothing_it_would_see():
    # The conversation keeps every unit's features for re-prefills; the thinker casts
    # them to its dtype, so bf16 storage is exactly what a bf16 model reads, at half size.
    import torch

    wave = np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.1
    full = AudioFeaturizer()(wave, 16000).features
    kept = AudioFeaturizer()(wave, 16000, torch.bfloat16).features
    assert kept.dtype == torch.bfloat16
    assert torch.equal(kept, full.to(torch.bfloat16))
    assert kept.untyped_storage().nbytes() * 2 == full.untyped_storage().nbytes()


@pytest.mark.parametrize("shift_on_trim", [True, False])
def test_settled_turns_let_go_of_their_audio_and_frames(model_and_layout, shift_on_trim):
    """Past turns' features and frames made the process grow with the context (the
    60-minute soak: +63 MB); where trimming shifts the caches they are never read again."""
    from app.model.qwen_omni.cache import MEDIA_RELEASED, SETTLED_AFTER_TURNS, pack

    model, layout = model_and_layout
    ctx = WarmContext(model, shift_on_trim=shift_on_trim)
    ctx.append(layout.system("Short."))
    last = SETTLED_AFTER_TURNS + 3
    for turn in range(1, last + 1):
        ctx.extend([*_conversation(layout, 1, turn=turn), layout.user_close(turn)])
        ctx.append(layout.assistant(turn, layout.encode("ok"), "ok"))
    for entry in ctx.entries:
        seg = entry.segment
        if seg.kind is not Kind.UNIT:
            continue
        released = shift_on_trim and seg.turn < last - SETTLED_AFTER_TURNS
        assert (seg.audio is None) is released
        assert bool(seg.extra.get(MEDIA_RELEASED)) is released
    if shift_on_trim:  # a settled unit can no longer be prefilled: said plainly
        settled = next(e.segment for e in ctx.entries if e.segment.extra.get(MEDIA_RELEASED))
        with pytest.raises(RuntimeError, match="let go"):
            pack([settled])
