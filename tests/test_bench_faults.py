"""`duetto bench faults`' harness: rows run in a worker process under their own time
limit; a crash or a hang costs one row, a loss fails the command; and a couple of the
real rows (damaged settings and personas, in the real window) go through it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from app.bench import faults
from app.bench.fault_report import Outcome, RowResult, cryptic_part, table
from app.bench.fault_rows import BY_NAME, RowSpec
from app.bench.fault_runner import run_rows

pytestmark = pytest.mark.timeout(180)

TESTS = Path(__file__).resolve().parent


def _row(name: str, function: str, timeout_s: float = 30) -> RowSpec:
    return RowSpec(name, "test", f"fault_rows_for_tests:{function}", timeout_s,
                   "a row for the harness's tests", models=())


@pytest.fixture
def test_rows(monkeypatch):
    """The rows above importable in the worker, and selectable by the command."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    rows = (_row("loses", "loses_a_file"), _row("aborts", "aborts"),
            _row("hangs", "never_returns", timeout_s=3), _row("passes", "passes"))
    monkeypatch.setattr(faults, "ROWS", rows)
    monkeypatch.setattr(faults, "select", lambda only: [r for r in rows if r.name in only])
    return rows


def _command(only: list[str], tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(only=only, json=tmp_path / "faults.json", work=tmp_path / "w",
                              list=False)


def test_a_row_that_loses_something_fails_the_command(test_rows, tmp_path, capsys):
    assert faults.run(_command(["loses", "passes"], tmp_path)) == 1
    shown = capsys.readouterr().out
    assert "FAIL lost:" in shown
    assert "1/2 faults passed" in shown
    saved = json.loads((tmp_path / "faults.json").read_text())
    assert not saved["passed"]
    lost = next(r for r in saved["rows"] if r["name"] == "loses")
    assert lost["verdict"] == "lost"
    assert lost["problems"] == ["lost: the conversation's recording is gone"]
    assert lost["said"] == ["warning: the recording could not be finished"]
    assert faults.run(_command(["passes"], tmp_path)) == 0


def test_a_crash_and_a_hang_cost_one_row_each(test_rows, tmp_path):
    results = run_rows([r for r in test_rows if r.name in ("aborts", "hangs", "passes")],
                       tmp_path)
    verdicts = {r.name: r.verdict for r in results}
    assert verdicts == {"aborts": "crash", "hangs": "hang", "passes": "pass"}
    crash = next(r for r in results if r.name == "aborts")
    assert "SIGABRT" in crash.problems[0]
    assert (tmp_path / "rows" / "passes" / "kept.txt").exists()  # the run went on after


def test_real_rows_on_damaged_user_files_go_through_the_harness(tmp_path):
    rows = [BY_NAME["settings-json-list"], BY_NAME["persona-corrupt"]]
    results = run_rows(rows, tmp_path)
    assert [r.name for r in results] == ["settings-json-list", "persona-corrupt"]
    for result in results:
        assert result.passed, result.problems
        assert result.said, "the window said nothing"
    settings, persona = results
    assert "set aside" in settings.kept or "kept as" in settings.kept
    assert any("old-friend" in text for text in persona.said)


def test_exception_names_in_messages_are_flagged():
    assert cryptic_part("The conversation could not start: CaptureError: no file") == \
        "CaptureError"
    assert cryptic_part("could not read it ([Errno 30] Read-only file system)") == "[Errno 30]"
    assert cryptic_part("The microphone file is missing: choose another one") is None
    out = Outcome(said=["error: OSError: disk"])
    out.check_words()
    assert out.problems == ["cryptic: 'OSError' shown to the user"]


def test_the_table_shows_each_rows_words_kept_and_verdict():
    good = RowResult.of("settings-empty", "settings",
                        Outcome(said=["warning: settings were damaged"], kept="defaults"), 1.0)
    bad_outcome = Outcome(said=[], kept="")
    bad_outcome.problem("silent", "nothing told the user")
    bad = RowResult.of("mic-nan", "media", bad_outcome, 2.0)
    text = table([good, bad])
    assert "settings-empty" in text and "PASS" in text
    assert "FAIL silent: nothing told the" in text
    assert "1/2 faults passed" in text


def test_a_message_counts_only_for_the_words_it_holds():
    out = Outcome(said=["info: The model is speaking again"])
    assert not out.expect_said("inf", "nan", what="the infinite samples")
    assert out.problems == ["silent: nothing told the user about the infinite samples"]
    told = Outcome(said=["warning: speech.wav holds 400 samples that are not numbers (NaN)"])
    assert told.expect_said("nan", what="the NaN samples") and not told.problems


def test_rows_of_another_lane_run_in_a_worker_of_their_own(test_rows, tmp_path):
    passes = next(r for r in test_rows if r.name == "passes")
    beside = RowSpec("passes-beside", "test", passes.target, 30, passes.what, models=(),
                     lane=1)
    results = run_rows([beside, passes], tmp_path)
    assert [r.name for r in results] == ["passes-beside", "passes"]  # the order asked
    assert all(r.passed for r in results)
    assert (tmp_path / "worker-0-1.log").exists() and (tmp_path / "worker-1-1.log").exists()
