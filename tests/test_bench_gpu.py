"""`duetto bench gpu` without a GPU: it refuses in one line, and its measuring code runs on
the tiny models with a fake device counter (the GPU is the one thing a CPU cannot give;
the counter here is what a GPU's allocator would report for these tensors)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import tiny_models
import torch

from app.__main__ import main
from app.bench import gpu
from app.model.contract import Quant
from app.model.place import allocated

qwen_tiny_factory = tiny_models.qwen_tiny_factory
moshi_tiny_factory = tiny_models.moshi_tiny_factory


def test_refuses_in_one_line_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA GPU here" in err


class _Counter:
    """Stands in for the GPU's allocation counters: the bytes of the last loaded model."""

    loaded = None

    def __init__(self) -> None:
        pass

    def now(self) -> int:
        m = _Counter.loaded
        return sum(allocated(m.model, m.placement).values()) if m is not None else 0

    def peak(self) -> int:
        return self.now()

    def reset_peak(self) -> None:
        pass


def _args(**kw) -> argparse.Namespace:
    base = dict(context=2048, moshi_context=12, units=1, answer_tokens=6, frames=4)
    return argparse.Namespace(**{**base, **kw})


def test_qwen_row_measures_and_checks_its_targets(qwen_tiny_factory, monkeypatch) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from app.model.qwen_omni import loader

    folder: Path = qwen_tiny_factory(min_answer_tokens=6)

    def load_random(size, q, *, device, context, talker_headroom, seed=0):
        loaded = loader.load_generated(
            AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder),
            torch.load(folder / "spk_dict.pt", weights_only=True), q, device="cpu",
            context=context, talker_headroom=talker_headroom)
        _Counter.loaded = loaded
        return loaded

    monkeypatch.setattr(loader, "load_random", load_random)
    monkeypatch.setattr(gpu, "Memory", _Counter)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    row = gpu.Row("qwen2.5-omni", "7B", "nf4")
    gpu._qwen(row, _args())
    assert row.context == 2048 and row.unit_ms is not None and row.rtf is not None
    assert row.measured["weights"] == pytest.approx(row.plan["weights"], abs=1e-4)
    # The 7B nf4 row carries the speed targets; the memory target is on every row.
    assert {"speech RTF <= 0.3", "first audio <= 0.30 s after the decision"} <= set(row.targets)
    assert any(k.startswith("plan within") for k in row.targets)


def test_moshi_row_times_frames_with_a_full_window(moshi_tiny_factory, monkeypatch) -> None:
    from transformers import AutoConfig

    from app.model.moshi import loader

    folder = moshi_tiny_factory()

    def load_random(q, *, device, context, seed=0):
        loaded = loader.load_generated(AutoConfig.from_pretrained(folder), q, device="cpu",
                                       context=context)
        _Counter.loaded = loaded
        return loaded

    monkeypatch.setattr(loader, "load_random", load_random)
    monkeypatch.setattr(gpu, "Memory", _Counter)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    row = gpu.Row("moshi", "7B", Quant.NF4.value)
    gpu._moshi(row, _args())
    assert row.context == 12 and row.frame_ms_p99 >= row.frame_ms_median > 0
    assert "frame p99 <= 80 ms" in row.targets
