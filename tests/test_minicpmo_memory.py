"""MiniCPM-o's memory plan against what its loader and caches really hold (the tiny
checkpoint, this CPU), and the published model's plan part by part.

The plan counts weights by the placement rule on the meta device (as for every family)
and adds MiniCPM-o's own lines (app/model/minicpm_o/memory.py): the LLM's sliding window
plus one unit, the audio encoder's cache, the speech decoder's cache and the token2wav
files of part 2, and an estimate of the working memory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.model import memory_plan, quant
from app.model.contract import Quant
from app.model.minicpm_o import memory
from app.model.minicpm_o.config import MiniCPMOConfig
from app.model.minicpm_o.loader import load_minicpmo
from app.model.place import allocated
from tests.minicpmo_tiny import tiny_folder, tiny_loaded

GIB = memory_plan.GIB


def _tiny_planner() -> memory_plan.Planner:
    folder = tiny_folder()
    return memory_plan.Planner("minicpm-o", MiniCPMOConfig.from_folder(folder), device="cpu",
                               name=str(folder))


@pytest.mark.parametrize("q", [Quant.BF16, Quant.INT8, Quant.NF4])
def test_plan_equals_what_the_loader_allocates(q: Quant) -> None:
    ok, why = quant.quant_support(q, "cpu")
    if not ok:
        pytest.skip(f"{q.value} does not run on this CPU: {why}")
    loaded = tiny_loaded() if q is Quant.BF16 else load_minicpmo(tiny_folder(), quant=q)
    plan = _tiny_planner().plan(q, 1200)
    planned = {(p.name, p.where): p.bytes for p in plan.parts if p.kind == "weights"}
    assert allocated(loaded.model, loaded.placement) == planned
    assert {"llm", "llm head", "vision encoder", "resampler", "audio encoder",
            "speech decoder"} <= {name for name, _ in planned}


def test_llm_context_is_the_cache_of_the_window_and_one_unit() -> None:
    """transformers' cache over window + one unit's positions holds the planned bytes."""
    from transformers import DynamicCache

    loaded = tiny_loaded()
    config, llm = loaded.model.config, loaded.model.llm
    window = 1200
    plan = _tiny_planner().plan(Quant.BF16, window)
    planned = {p.name: p.bytes for p in plan.parts if p.kind == "context"}
    positions = memory.cache_tokens(config, window)
    cache = DynamicCache(config=llm.config)
    embeds = torch.zeros(1, positions, config.llm_hidden, dtype=loaded.dtype)
    with torch.no_grad():
        llm(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1)
    held = sum(layer.keys.untyped_storage().nbytes() + layer.values.untyped_storage().nbytes()
               for layer in cache.layers)
    assert held == planned["llm context"]
    assert positions - window == memory.unit_tokens(config) == 99


def test_audio_encoder_cache_stays_within_its_line() -> None:
    """35 s streamed unit by unit: the cache grows to just under 1500 frames, is reset as
    the official code resets it, and never holds more than the plan's line."""
    loaded = tiny_loaded()
    plan = _tiny_planner().plan(Quant.BF16, 1200)
    line = next(p.bytes for p in plan.parts if p.name == "audio encoder context")
    stream = loaded.model.new_audio_stream()
    rng = np.random.default_rng(0)
    most, resets, before = 0, 0, 0
    for _ in range(35):
        stream.feed((0.1 * rng.standard_normal(16000)).astype(np.float32))
        frames = len(stream.cache)
        resets += frames < before
        before = frames
        held = sum(t.untyped_storage().nbytes() for t in (*stream.cache.keys,
                                                          *stream.cache.values))
        most = max(most, held)
    assert resets == 1
    assert 0.9 * line < most <= line


def test_published_model_plan_parts() -> None:
    """nf4, the default 4,000-token window: the LLM in 4-bit with its embeddings in system
    RAM, the resampler and the code head in bf16, the speech path counted on the GPU."""
    planner = memory_plan.planner_for_entry("minicpm-o-4.5")  # one meta tree for both plans
    plan = planner.plan(Quant.NF4)
    assert plan.context == 4000 and plan.context_unit == "tokens"
    parts = {p.name: p for p in plan.parts}
    assert parts["llm"].by_dtype["nf4"] > 3 * GIB
    assert parts["llm embeddings"].where == "host"
    assert parts["speech decoder embeddings"].where == "host"
    assert parts["speech vocoder"].where == "device" and parts["speech vocoder"].kind == "weights"
    assert parts["voice encoders"].where == "host"
    # 144 KiB a token (36 layers, 8 key-value heads of 128, bf16) over 4,000 + 99 tokens.
    assert parts["llm context"].bytes == 36 * 2 * 8 * 128 * 2 * 4099
    assert parts["speech decoder context"].bytes == 20 * 2 * 768 * 2 * 4096
    assert plan.total_bytes <= 8.0 * GIB
    assert plan.host_bytes < 2.5 * GIB
    # bf16 needs a 24 GB card: the official demo's figure (about 21.5 GB) is of that order.
    bf16 = planner.plan(Quant.BF16)
    assert 16 * GIB < bf16.total_bytes < 21.5e9


def test_vocoder_files_sit_where_they_run() -> None:
    """Beside a GPU the per-chunk models are on it and the voice encoders in system RAM;
    on a CPU run all are on the one device."""
    from app.model.minicpm_o.sizes import TOKEN2WAV_FILES

    gpu = {p.name: p for p in memory.vocoder_parts(TOKEN2WAV_FILES, gpu=True)}
    assert gpu["speech vocoder"].where == "device"
    assert set(gpu["speech vocoder"].by_dtype) == {"flow.pt", "hift.pt"}
    assert gpu["voice encoders"].where == "host"
    cpu = memory.vocoder_parts(TOKEN2WAV_FILES, gpu=False)
    assert [(p.where, p.kind) for p in cpu] == [("device", "weights"), ("device", "context")]
    assert cpu[0].bytes == sum(b for b, _ in TOKEN2WAV_FILES.values())
    assert memory.vocoder_parts(None, gpu=True) == []


def test_the_flow_stream_caches_are_planned_for_the_longest_voice_prompt() -> None:
    """The turn-start cache (kept to restore each turn) and the live one (the prompt plus
    the 100 frames a turn keeps): 1.39 GiB in float32 for a 10 s prompt and 10 steps."""
    from app.model.minicpm_o.sizes import TOKEN2WAV_FILES
    from app.model.minicpm_o.token2wav.flow import cache_bytes
    from app.model.minicpm_o.token2wav.flow_yaml import published_flow_config

    part = {p.name: p for p in memory.vocoder_parts(TOKEN2WAV_FILES, gpu=True)}[
        "speech vocoder cache"]
    assert part.kind == "context" and part.where == "device"
    frames = 50 * memory.VOICE_PROMPT_SECONDS
    live = cache_bytes(published_flow_config(), frames, 10)
    assert part.by_dtype["live cache"] == live
    assert live > part.by_dtype["turn-start cache"] > 0.8 * live
    assert 1.3 * GIB < part.bytes < 1.5 * GIB
