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


@pytest.mark.parametrize("quant", [Quant.NF4, Quant.BF16])
def test_minicpmo_row_speaks_and_times_its_units(monkeypatch, quant: Quant) -> None:
    """The MiniCPM-o row on the tiny architecture (LLM, speech decoder, flow, vocoder)
    and the CPU: the same function the GPU runs, the quantized speech decoder included
    (nf4 holds its projector's weights as uint8: the condition must not take that dtype)."""
    from app.model.minicpm_o import loader

    real = loader.load_random

    def load_random(q, *, device, context, config=None, seed=0):
        loaded = real(q, device=device, context=context, config=config, seed=seed)
        _Counter.loaded = loaded
        return loaded

    monkeypatch.setattr(loader, "load_random", load_random)
    monkeypatch.setattr(gpu, "Memory", _Counter)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny token2wav on a busy 2-core machine
    try:
        row = gpu.Row("minicpm-o", gpu.MINICPMO_SIZE, quant.value)
        gpu._minicpmo(row, _args(minicpmo_context=1000, minicpmo_units=8), device="cpu",
                      tiny=True)
    finally:
        torch.set_num_threads(before)
    assert row.context == 1000 and row.unit_ms is not None and row.unit_ms_p99 >= row.unit_ms
    # The schedule speaks 4 units and listens 3: both kinds are timed, a turn opens and
    # its first audio is measured from the decision; speech was voiced.
    assert row.speaking_unit_ms is not None and row.listening_unit_ms is not None
    assert row.speech_ms is not None and row.speech_ms > 0
    assert row.turns >= 1 and row.first_audio_after_decision_s is not None
    assert 0 < row.first_audio_after_decision_s < row.speaking_unit_ms / 1000 * 2
    assert 0 < row.rtf < float("inf")
    assert any(k.startswith("plan within") for k in row.targets)
    if quant is Quant.NF4:
        assert {"median speaking unit <= 0.15 s",
                "first audio <= 0.30 s after the decision"} <= set(row.targets)
    assert "minicpm-o" in gpu._line(row) and "1st audio" in gpu._line(row)


def test_the_minicpmo_rows_come_first_and_are_in_the_default_run() -> None:
    assert gpu.DEFAULT_ROWS[0] == ("minicpm-o", gpu.MINICPMO_SIZE, "nf4")
    parser = argparse.ArgumentParser()
    gpu.add_arguments(parser)
    assert "minicpm-o" in parser.parse_args([]).families
    assert {q for f, _, q in gpu.DEFAULT_ROWS if f == "minicpm-o"} == {"nf4", "int8", "bf16"}
