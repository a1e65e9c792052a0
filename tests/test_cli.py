"""The command line: subcommands load lazily and a broken one fails with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app import __main__ as cli


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out


def test_unknown_subcommand_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_broken_subcommand_module_names_the_cause(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", ("app.no_such_module", "broken on purpose"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["broken"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "duetto broken: cannot start" in err
    assert "app.no_such_module" in err
    # Other commands still work: nothing was imported eagerly.
    assert cli.main(["doctor"]) == 0


def test_bench_without_a_name_says_which_exist(capsys):
    assert cli.main(["bench"]) == 2
    assert "timeline" in capsys.readouterr().out


def test_doctor_runs_as_a_program_without_devices():
    result = subprocess.run(
        [sys.executable, "-m", "app", "doctor"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for title in ("Audio", "Camera", "GPU", "Libraries", "Models"):
        assert title in result.stdout
