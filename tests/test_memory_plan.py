"""The memory plan against what the loaders really allocate (tiny models, this CPU), and
the refusals before loading.

The plan is computed on the meta device from the rule (placement.py); the loaders build
real tensors. Part by part and byte for byte they must agree, in every quantization that
runs here: bitsandbytes 0.50 quantizes to NF4 and int8 on a CPU. (On a CPU the plan
counts exact bytes; on CUDA it rounds each block up to the allocator's 512 bytes, which
the GPU check holds against the device's own counters.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from app.model import checkpoint, memory_plan, quant
from app.model.contract import BackendError, ModelSource, Persona, Quant, Voice
from app.model.place import allocated

qwen_tiny = tiny_models.qwen_tiny
qwen_tiny_factory = tiny_models.qwen_tiny_factory
moshi_tiny_factory = tiny_models.moshi_tiny_factory

QUANTS = [Quant.BF16, Quant.INT8, Quant.NF4]


def _skip_unless_here(q: Quant) -> None:
    ok, why = quant.quant_support(q, "cpu")
    if not ok:
        pytest.skip(f"{q.value} does not run on this CPU: {why}")


def _planned_weights(plan: memory_plan.Plan) -> dict[tuple[str, str], int]:
    return {(p.name, p.where): p.bytes for p in plan.parts if p.kind == "weights"}


def _noop(what: str, frac: float) -> None:
    pass


# --- Qwen2.5-Omni ------------------------------------------------------------------------


@pytest.mark.parametrize("q", QUANTS)
def test_qwen_plan_equals_what_the_loader_allocates(qwen_tiny: Path, q: Quant) -> None:
    _skip_unless_here(q)
    from app.model.qwen_omni import loader

    loaded = loader.load(ModelSource(local_dir=qwen_tiny), q, _noop, device="cpu",
                         context=512, talker_headroom=64)
    measured = allocated(loaded.model, loaded.placement)
    assert measured == _planned_weights(loaded.plan)
    # Every part the rule names is there, and the quantized ones really are smaller.
    parts = {name for name, _ in measured}
    assert {"thinker", "thinker head", "audio encoder", "vision encoder", "talker",
            "vocoder"} <= parts


@pytest.mark.parametrize("q", [Quant.BF16, Quant.NF4])
def test_qwen_reserved_context_equals_the_plan(qwen_tiny: Path, q: Quant) -> None:
    _skip_unless_here(q)
    from app.model.qwen_omni.backend import QwenOmniBackend
    from app.model.qwen_omni.speech import AnswerConfig
    from app.model.reserved_cache import reserved_bytes

    backend = QwenOmniBackend(token_budget=700, device="cpu",
                              answer=AnswerConfig(max_answer_tokens=8, max_codes=96))
    backend.load(ModelSource(local_dir=qwen_tiny), q, _noop)
    backend.start(Persona("p", "Answer briefly.", voice=Voice(builtin="Chelsie")))
    plan = backend._loaded.plan
    assert plan.context == 700
    planned = {p.name: p.bytes for p in plan.parts if p.kind == "context"}
    assert reserved_bytes(backend.ctx.cache) == planned["thinker context"]
    assert reserved_bytes(backend.ctx.talker_cache) == planned["talker context"]
    backend.close()


def test_qwen_parts_follow_the_rule(qwen_tiny: Path) -> None:
    """NF4: the thinker and talker hold 4-bit weights plus their state; the vocoder and
    the talker's code head stay in floating point (the rule, not the loader, says so)."""
    from app.model.qwen_omni import loader

    _skip_unless_here(Quant.NF4)
    loaded = loader.load(ModelSource(local_dir=qwen_tiny), Quant.NF4, _noop, device="cpu",
                         context=512)
    parts = {p.name: p for p in loaded.plan.parts if p.kind == "weights"}
    assert parts["thinker"].by_dtype["nf4"] > 0 and parts["thinker"].by_dtype["quant state"] > 0
    assert parts["talker"].by_dtype["nf4"] > 0
    assert set(parts["vocoder"].by_dtype) <= {"float32", "int64", "bool"}
    head = loaded.model.talker.codec_head
    assert isinstance(head, torch.nn.Linear) and head.weight.dtype == torch.float32


# --- Moshi / PersonaPlex ------------------------------------------------------------------


@pytest.mark.parametrize("q", QUANTS)
@pytest.mark.parametrize("layout", ["transformers", "moshi"])
def test_moshi_plan_equals_what_the_loader_allocates(moshi_tiny_factory, q: Quant,
                                                     layout: str) -> None:
    _skip_unless_here(q)
    from app.model.moshi import loader

    loaded = loader.load(ModelSource(local_dir=moshi_tiny_factory(layout=layout)), q, _noop,
                         device="cpu", context=40)
    assert allocated(loaded.model, loaded.placement) == _planned_weights(loaded.plan)
    if q is Quant.NF4:
        # The text head is int8 under an nf4 model (converted after loading, in slices).
        assert type(loaded.model.decoder.lm_head).__name__ == "Linear8bitLt"
    # Mimi is float32 whatever the model's dtype.
    assert {t.dtype for t in loaded.model.audio_encoder.parameters()} == {torch.float32}


@pytest.mark.parametrize("layout", ["transformers", "moshi"])
def test_moshi_context_window_equals_the_plan(moshi_tiny_factory, layout: str) -> None:
    """After more frames than the window, the cache holds exactly the plan's context."""
    from app.model.moshi import loader
    from app.model.moshi.engine import Stepper

    frames = 12
    loaded = loader.load(ModelSource(local_dir=moshi_tiny_factory(layout=layout)), Quant.BF16,
                         _noop, device="cpu", context=frames)
    stepper = Stepper(loaded.model, loaded.delays)
    rng = np.random.default_rng(0)
    for _ in range(frames + 5):
        stepper.step(torch.from_numpy(rng.integers(0, 64, 8)), None)
    held = sum(t.untyped_storage().nbytes() for layer in stepper.cache.layers
               for t in (layer.keys, layer.values))
    planned = sum(p.bytes for p in loaded.plan.parts if p.kind == "context")
    assert held == planned


# --- refusing before loading ----------------------------------------------------------------


def _no_weights_may_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("weights were read before the fit check")

    from app.model import hf_load

    monkeypatch.setattr(checkpoint, "mmap_safetensors", refuse)
    monkeypatch.setattr(hf_load, "from_pretrained", refuse)


@pytest.mark.parametrize("layout", ["transformers", "moshi"])
def test_moshi_too_big_is_refused_before_any_weight_is_read(
        moshi_tiny_factory, layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.model.moshi import loader

    folder = moshi_tiny_factory(layout=layout)
    planned = loader.load(ModelSource(local_dir=folder), Quant.BF16, _noop, device="cpu",
                          context=400).plan
    _no_weights_may_be_read(monkeypatch)
    monkeypatch.setattr(checkpoint, "available_bytes", lambda device: planned.total_bytes - 1)
    with pytest.raises(BackendError) as err:
        loader.load(ModelSource(local_dir=folder), Quant.BF16, _noop, device="cpu", context=400)
    text = str(err.value)
    assert "needs" in text and "free" in text
    # A shorter context fits in what is free, and the message says so.
    assert "a context of" in err.value.hint and "frames at bf16" in err.value.hint


def test_qwen_too_big_is_refused_with_what_would_fit(qwen_tiny: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from app.model.qwen_omni import loader

    planner = memory_plan.planner_for_folder(qwen_tiny, device="cpu", talker_headroom=64)
    shortest = memory_plan.QWEN_MIN_CONTEXT
    bf16 = planner.plan(Quant.BF16, shortest).total_bytes
    nf4 = planner.plan(Quant.NF4, shortest).total_bytes
    assert nf4 < bf16
    free = (nf4 + bf16) // 2  # nf4 fits at the shortest context, bf16 does not
    _no_weights_may_be_read(monkeypatch)
    monkeypatch.setattr(checkpoint, "available_bytes", lambda device: free)
    with pytest.raises(BackendError) as err:
        loader.load(ModelSource(local_dir=qwen_tiny), Quant.BF16, _noop, device="cpu",
                    context=4096, talker_headroom=64)
    assert "nothing was loaded" in str(err.value)
    assert "nf4 with up to" in err.value.hint


def test_without_a_context_the_longest_that_fits_is_chosen(qwen_tiny: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from app.model import fit
    from app.model.qwen_omni import loader

    planner = memory_plan.planner_for_folder(qwen_tiny, device="cpu", talker_headroom=64)
    free = planner.plan(Quant.BF16, 5000).total_bytes
    config = planner.config
    sized, _, _ = loader.prepare(config, Quant.BF16, "cpu", None, 64, name="tiny", free=free)
    assert 5000 - 16 <= sized.plan.context <= 5000
    assert sized.plan.total_bytes <= free
    assert "the longest that fits" in sized.note
    with pytest.raises(BackendError):
        fit.size(planner, Quant.BF16, 6000, "cpu", free=free)


# --- the published full-size models --------------------------------------------------------


def test_an_ordinary_card_holds_each_family_at_nf4() -> None:
    """The targets: the whole app at nf4 (weights, quantization state, context, vocoder,
    working memory) within 8.0 GiB for the 7B and 5.0 GiB for the 3B at a 16k context,
    6.0 GiB for Moshi and PersonaPlex with two minutes (1500 frames) of context, 8.0 GiB
    for MiniCPM-o 4.5 with a 4,000-token window and its speech path (part 2's speech
    decoder cache and token2wav counted)."""
    gib = memory_plan.GIB
    targets = [("qwen2.5-omni-7b", 16384, 8.0), ("qwen2.5-omni-3b", 16384, 5.0),
               ("moshiko", 1500, 6.0), ("personaplex-7b", 1500, 6.0),
               ("minicpm-o-4.5", 4000, 8.0)]
    for entry, context, limit in targets:
        plan = memory_plan.plan_entry(entry, Quant.NF4, context)
        assert plan.context == context, entry
        assert plan.total_bytes <= limit * gib, (entry, plan.total_gib)
        assert plan.load_bytes <= plan.total_bytes


def test_nf4_counts_half_a_byte_a_value_plus_its_state() -> None:
    """1 byte/param was the old fit check's NF4 figure; bitsandbytes holds half that."""
    packed, state = memory_plan.nf4_bytes(4096 * 4096)
    assert packed == 4096 * 4096 // 2
    assert state == 4096 * 4096 // 64 + 64 + 4 + 4 * 4096 * 4096 // 64 // 256 + 1024


def test_random_weights_take_the_loaders_own_path(qwen_tiny: Path, moshi_tiny_factory) -> None:
    """`duetto bench gpu` loads random weights through from_pretrained with the rule's
    quantization, as a checkpoint loads: what it builds is what the plan says."""
    _skip_unless_here(Quant.NF4)
    from transformers import AutoConfig, AutoTokenizer

    from app.model.moshi import loader as moshi_loader
    from app.model.qwen_omni import loader as qwen_loader

    config = AutoConfig.from_pretrained(qwen_tiny)
    speakers = torch.load(qwen_tiny / "spk_dict.pt", weights_only=True)
    qwen = qwen_loader.load_generated(config, AutoTokenizer.from_pretrained(qwen_tiny), speakers,
                                      Quant.NF4, device="cpu", context=600)
    assert allocated(qwen.model, qwen.placement) == _planned_weights(qwen.plan)
    moshi = moshi_loader.load_generated(AutoConfig.from_pretrained(moshi_tiny_factory()),
                                        Quant.NF4, device="cpu", context=40)
    assert allocated(moshi.model, moshi.placement) == _planned_weights(moshi.plan)
    assert type(moshi.model.decoder.lm_head).__name__ == "Linear8bitLt"


def test_a_plan_built_in_another_thread_leaves_a_tiny_build_in_float32(tmp_path):
    """The window sizes plans in the background while a model is built: torch's default
    dtype is one setting for the process, so builds take turns (app/model/building.py).
    Unguarded, the tiny Qwen built meanwhile got bfloat16 layers (or failed)."""
    import threading

    from safetensors import safe_open

    from app.model import building
    from app.model.tiny import build_tiny

    inside = threading.Event()

    def bf16_build_for_a_while():
        with building.building(torch.bfloat16):
            inside.set()
            threading.Event().wait(8.0)  # longer than a tiny build takes

    other = threading.Thread(target=bf16_build_for_a_while)
    other.start()
    assert inside.wait(30)
    folder = build_tiny("qwen2.5-omni", tmp_path)  # starts while the other one builds
    other.join()
    assert torch.get_default_dtype() is torch.float32
    dtypes = set()
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            dtypes |= {f.get_slice(k).get_dtype() for k in list(f.keys())}
    assert dtypes <= {"F32", "I64"}, dtypes
