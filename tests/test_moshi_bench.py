"""`duetto bench backend` for the Moshi family on the tiny model, and its refusals; a
folder's family, as both benchmarks find it."""

from __future__ import annotations

import argparse

import pytest
import tiny_models
import torch

from app.bench import backend as bench_backend

moshi_tiny_factory = tiny_models.moshi_tiny_factory
qwen_tiny_factory = tiny_models.qwen_tiny_factory
qwen_tiny = tiny_models.qwen_tiny


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_backend.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_tiny_moshi_bench_prints_frame_figures(capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench_backend.run(_args("--family", "moshi", "--model", "tiny", "--frames", "12"))
    out = capsys.readouterr().out
    assert "(moshi family)" in out
    assert "compute per 80 ms frame        median" in out and "p99" in out
    assert "peak memory" in out and "persona prefix" in out
    # The targets are judged, whatever this shared machine's load makes of them.
    assert "target: median frame < 80 ms (real time)" in out
    assert "target: tiny on CPU: median frame < 40 ms" in out
    assert rc == (0 if "NO" not in out else 1)


def test_a_moshi_folder_is_recognised(moshi_tiny_factory) -> None:
    args = _args("--model", str(moshi_tiny_factory(layout="moshi")))
    assert bench_backend._family(args) == "moshi"
    assert bench_backend._family(_args("--model", "tiny")) == "qwen2.5-omni"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_full_size_refuses_without_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_backend.run(_args("--family", "moshi", "--full-size", "7B")) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "this machine has none" in err


def test_a_folder_names_its_family(moshi_tiny_factory, qwen_tiny, tmp_path) -> None:
    from app.model import families
    from app.model.contract import BackendError

    assert families.of_folder(moshi_tiny_factory()) == "moshi"
    assert families.of_folder(moshi_tiny_factory(layout="moshi")) == "moshi"
    assert families.of_folder(qwen_tiny) == "qwen2.5-omni"
    with pytest.raises(BackendError, match="none of the families"):
        families.of_folder(tmp_path)


def test_bench_duplex_loads_any_family(moshi_tiny_factory, tmp_path) -> None:
    from app.bench import duplex

    parser = argparse.ArgumentParser()
    duplex.add_arguments(parser)
    args = parser.parse_args(["--backend", str(moshi_tiny_factory())])
    made = duplex.make_backend(args, tmp_path)
    try:
        spec = made.backend.spec
        assert (spec.family, spec.unit_ms, spec.native_duplex) == ("moshi", 80, True)
        assert "moshi" in made.description
    finally:
        made.backend.close()
