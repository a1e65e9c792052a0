"""On a CUDA GPU: quantized loads, device placement, dtypes and the streaming vocoder.

Marked `gpu` and skipped without CUDA; scripts/gpu_check.sh runs them on a GPU machine
(with `duetto bench gpu`). They use the tiny models: what they check is where each
tensor ends up and in which form, which the placement rule decides the same way at any
size, and that the plan's bytes are what the device's allocator counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from app.model import memory_plan
from app.model.contract import Control, ModelSource, Persona, Quant, Unit, Voice
from app.model.place import HOST, HostEmbedding, allocated

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

qwen_tiny = tiny_models.qwen_tiny
qwen_tiny_factory = tiny_models.qwen_tiny_factory
moshi_tiny_factory = tiny_models.moshi_tiny_factory
QUANTS = [Quant.BF16, Quant.INT8, Quant.NF4]


def _noop(what: str, frac: float) -> None:
    pass


def _check_placement(model: torch.nn.Module, placement, float_dtype: torch.dtype) -> None:
    """Every tensor on the GPU except the host embeddings'; no accelerate hooks left."""
    for name, module in model.named_modules():
        assert not hasattr(module, "_hf_hook"), f"{name} still has an accelerate hook"
        if isinstance(module, HostEmbedding):
            assert module.host_weight.device.type == "cpu"
            assert module.host_weight.dtype == float_dtype
            continue
        for pname, t in [*module.named_parameters(recurse=False),
                         *module.named_buffers(recurse=False)]:
            assert t.device.type == "cuda", f"{name}.{pname} is on {t.device}"


def _device_bytes(measured: dict) -> int:
    return sum(v for (_, where), v in measured.items() if where != HOST)


@pytest.mark.parametrize("q", QUANTS)
def test_qwen_loads_on_the_gpu_as_planned(qwen_tiny: Path, q: Quant) -> None:
    from app.model.qwen_omni import loader

    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    loaded = loader.load(ModelSource(local_dir=qwen_tiny), q, _noop, device="cuda",
                         context=2048, talker_headroom=64)
    on_device = torch.cuda.memory_allocated() - before
    plan = loaded.plan
    dtype = plan.float_dtype
    assert dtype in (torch.bfloat16, torch.float16)
    _check_placement(loaded.model, loaded.placement, dtype)
    # The embeddings live in RAM, the vocoder in the model's 16-bit dtype.
    assert isinstance(loaded.model.thinker.get_input_embeddings(), HostEmbedding)
    assert {p.dtype for p in loaded.model.token2wav.parameters()} == {dtype}
    # The plan counts what the allocator holds (each block rounded up to 512 bytes).
    measured = allocated(loaded.model, loaded.placement)
    planned = {(p.name, p.where): p.bytes for p in plan.parts if p.kind == "weights"}
    assert set(measured) == set(planned)
    assert on_device == pytest.approx(plan.weights_bytes, rel=0.01, abs=256 * 1024)
    assert _device_bytes(measured) <= plan.weights_bytes
    if q is not Quant.BF16:
        import bitsandbytes as bnb

        kinds = {type(m) for m in loaded.model.thinker.modules()}
        assert (bnb.nn.Linear4bit if q is Quant.NF4 else bnb.nn.Linear8bitLt) in kinds


def test_qwen_answers_with_the_streaming_vocoder_on_the_gpu(qwen_tiny_factory) -> None:
    from app.model.qwen_omni.backend import QwenOmniBackend

    backend = QwenOmniBackend(token_budget=2048, device="cuda", max_answer_tokens=12)
    backend.load(ModelSource(local_dir=qwen_tiny_factory(min_answer_tokens=10)), Quant.NF4,
                 _noop)
    backend.start(Persona("p", "Answer briefly.", voice=Voice(builtin="Chelsie")))
    outs = list(backend.step(tiny_models.make_unit(0), Control(turn_ended=True)))
    chunks = [o.speech for o in outs if o.speech is not None]
    assert chunks and all(torch.isfinite(torch.from_numpy(c.audio)).all() for c in chunks)
    # The stream equals one pass of the vocoder over the same mel (16-bit on the GPU).
    voice = backend.last_answer.voice
    streamed = torch.from_numpy(np.concatenate([c.audio for c in chunks]))
    whole = torch.from_numpy(voice.vocode_all())[: streamed.numel()]
    assert torch.allclose(streamed, whole, atol=2e-2)
    backend.close()


@pytest.mark.parametrize("q", QUANTS)
@pytest.mark.parametrize("layout", ["transformers", "moshi"])
def test_moshi_loads_on_the_gpu_as_planned(moshi_tiny_factory, q: Quant, layout: str) -> None:
    from app.model.moshi import loader
    from app.model.moshi.backend import MoshiBackend

    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    loaded = loader.load(ModelSource(local_dir=moshi_tiny_factory(layout=layout)), q, _noop,
                         device="cuda", context=40)
    on_device = torch.cuda.memory_allocated() - before
    _check_placement(loaded.model, loaded.placement, loaded.plan.float_dtype)
    assert {p.dtype for p in loaded.model.audio_encoder.parameters()} == {torch.float32}
    assert isinstance(loaded.model.decoder.model.embed_tokens, HostEmbedding)
    assert on_device == pytest.approx(loaded.plan.weights_bytes, rel=0.01, abs=256 * 1024)
    backend = MoshiBackend(device="cuda")
    backend.attach(loaded)
    backend.start(Persona("p", "Hello."))
    audio = (0.05 * np.random.default_rng(0).standard_normal(1920)).astype(np.float32)
    outs = list(backend.step(Unit(0, 0.0, 0.08, 24000, audio), Control()))
    speech = [o.speech for o in outs if o.speech is not None]
    assert speech and speech[0].audio.size == 1920
    backend.close()


def test_the_plan_of_a_full_size_model_matches_the_gpu_it_runs_on() -> None:
    """The plan assumed a bf16 card; on this one it uses this card's own dtype."""
    from app.model import quant

    plan = memory_plan.plan_entry("qwen2.5-omni-3b", Quant.NF4, 4096, device="cuda")
    assert plan.float_dtype == quant.torch_dtype(Quant.NF4, "cuda")


@pytest.mark.parametrize("q", QUANTS)
def test_minicpmo_speaks_on_the_gpu(q: Quant) -> None:
    """The tiny MiniCPM-o with its whole speech path (speech decoder, flow, vocoder) on
    CUDA, through `duetto bench gpu`'s own row: the embeddings in system RAM, the speech
    decoder quantized, the voice prompt made on the CPU; no tensor may land on the wrong
    device, and the row's memory is the device's own counters."""
    import argparse

    from app.bench import gpu

    row = gpu.Row("minicpm-o", gpu.MINICPMO_SIZE, q.value)
    gpu._minicpmo(row, argparse.Namespace(minicpmo_context=1000, minicpmo_units=8),
                  device="cuda", tiny=True)
    assert row.speaking_unit_ms is not None and row.speech_ms is not None
    assert row.first_audio_after_decision_s is not None and 0 < row.rtf < float("inf")
    assert row.measured["weights"] > 0
