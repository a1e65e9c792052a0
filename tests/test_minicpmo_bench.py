"""`duetto bench backend --family minicpm-o --model tiny`: the speech path's figures (its
share of each unit, the real-time factor, <|speak|> decision to first audio) and the
gates on them."""

from __future__ import annotations

import argparse

import pytest
import torch

from app.bench import backend as bench_backend
from app.bench.backend_minicpmo import speech_figures
from app.model.minicpm_o.backend import Timing


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_backend.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_first_audio_is_measured_from_the_decision_to_the_first_voiced_unit() -> None:
    # Units start a second apart. Turn 1 opens 0.3 s into unit 1 and voices in it (ready
    # 0.8 s in); turn 2 opens 0.5 s into unit 3 but voices only in unit 4 (ready 0.2 s
    # in); turn 3 opens in unit 6, the last, and voices nothing.
    timing = Timing(units=[0.1, 0.8, 0.9, 0.6, 0.2, 0.1, 0.7],
                    speech=[0.0, 0.4, 0.5, 0.3, 0.1, 0.0, 0.2],
                    opened=[None, 0.3, None, 0.5, None, None, 0.4],
                    voiced=[0.0, 1.0, 1.0, 0.0, 0.5, 0.0, 0.0],
                    started=[float(i) for i in range(7)])
    fig = speech_figures(timing)
    assert fig.first_audio_ms == pytest.approx([500.0, 700.0])
    assert fig.turns_without_audio == 1
    assert fig.voiced_s == pytest.approx(2.5)
    assert fig.rtf == pytest.approx(1.5 / 2.5)


def test_tiny_minicpmo_bench_reports_speech_and_gates_it(capsys) -> None:
    before = torch.get_num_threads()
    try:
        rc = bench_backend.run(_args("--family", "minicpm-o", "--model", "tiny",
                                     "--units", "9", "--threads", "1"))
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "(minicpm-o family)" in out and "machine " in out and "cores" in out
    # The tiny model speaks on the bench's schedule: units 4..7 of the 9 timed.
    assert "speaking units               median" in out
    assert "of which speech (TTS+token2wav) median" in out
    assert "real-time factor" in out and "<|speak|> -> first audio       median" in out
    for target in ("p99 unit < 1000 ms (real time)", "speech real-time factor < 1",
                   "first audio < 1000 ms after the decision",
                   "tiny on CPU: median listening unit < 250 ms"):
        assert f"target: {target}" in out
    # Judged, whatever this shared machine's load makes of them.
    assert rc == (0 if "NO" not in out else 1)
