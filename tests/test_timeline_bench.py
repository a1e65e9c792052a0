"""`duetto bench timeline`: runs, reports, writes JSON, and fails on a missed target."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from app.bench import timeline as bench


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


def test_short_run_meets_its_targets_and_writes_json(tmp_path, capsys):
    out = tmp_path / "timeline.json"
    # A few seconds of simulated audio; the real-time target is for the full run, so the
    # test only asks for faster than real time (the machine is shared).
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    rc = run(["--minutes", "0.1", "--unit-seconds", "0.5", "--target-rtf", "1",
              "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "real-time factor" in printed and "all targets met" in printed
    data = json.loads(out.read_text())
    fig = data["figures"]
    assert data["passed"] is True
    assert fig["simulated_s"] == pytest.approx(6.0)
    assert fig["units_cut"] == fig["units_expected"] == 11  # the 12th waits for look-ahead
    assert fig["bad_units"] == 0 and fig["overflows"] == 0 and fig["gap_samples"] == 0
    assert fig["frames_pushed"] == 180 and fig["frames_delivered"] == 11
    assert fig["realtime_factor"] > 1
    assert data["verdicts"]["memory_flat"] is None  # needs more than a minute to judge
    if affinity is not None:
        assert os.sched_getaffinity(0) == affinity  # the pin is undone after the run


def test_missed_target_exits_non_zero(capsys):
    assert run(["--minutes", "0.02", "--target-rtf", "1e12"]) == 1
    assert "MISSED: realtime_factor" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--minutes", "0"], "--minutes"),
        (["--minutes", "nan"], "--minutes"),
        (["--native-rate", "44101"], "10 ms block"),
        (["--out-rate", "0", "--minutes", "0.01"], "not supported"),
        (["--fps", "-1"], "--fps"),
    ],
)
def test_bad_arguments_get_a_message_not_a_traceback(argv, message, capsys):
    assert run(argv) == 2
    assert message in capsys.readouterr().err


def test_registered_as_a_bench_subcommand():
    from app.bench.cli import BENCHMARKS

    assert BENCHMARKS["timeline"][0] == "app.bench.timeline"
