"""The launcher's command line, its start of the app, its time-left words and its window
(real uv and tiny real wheels; FAKE NETWORK from tests/launcher_fakes.py)."""

from __future__ import annotations

import shutil

import pytest
from duetto_launcher import builder, environment, launch, main
from duetto_launcher import payload as payload_mod
from duetto_launcher.builder import Builder
from duetto_launcher.download import Downloader
from duetto_launcher.environment import Layout
from duetto_launcher.rate import Rate, time_text
from duetto_launcher.torch_choice import TorchChoice

from tests.launcher_fakes import Recorder, make_payload

CPU = TorchChoice("cpu", "No NVIDIA GPU was found (a test).")


@pytest.fixture
def built(tmp_path, monkeypatch):
    folder, network = make_payload(tmp_path, [("alpha-sim", "1.0")], {"cpu": "2.13.0"})
    monkeypatch.setenv("DUETTO_PAYLOAD", str(folder))
    monkeypatch.setenv("DUETTO_ENV_DIR", str(tmp_path / "environment"))
    monkeypatch.setenv("DUETTO_TORCH", "cpu")
    found = payload_mod.read(folder)
    layout = Layout(tmp_path / "environment")
    plan = found.plan("cpu")
    job = Builder(layout, found, Recorder(), Downloader(layout.downloads, network))
    return job, layout, found, plan, network


def test_check_says_ready_or_damaged_and_remove_takes_only_the_environment(built, capsys,
                                                                            tmp_path):
    job, layout, found, plan, _ = built
    assert main.main(["--check"]) == 1
    job.ensure(CPU, plan, builder.state(layout, found, plan))
    assert main.main(["--check"]) == 0
    shutil.rmtree(environment.site_packages(layout.env) / "alpha_sim")
    assert main.main(["--check"]) == 1
    assert "alpha-sim (2 files missing, such as alpha_sim/" in capsys.readouterr().out
    kept = tmp_path / "recordings"
    kept.mkdir()
    assert main.main(["--remove-environment"]) == 0
    assert not layout.root.exists() and kept.exists()


def test_a_ready_environment_starts_the_app_with_its_arguments(built, monkeypatch):
    job, layout, found, plan, _ = built
    job.ensure(CPU, plan, builder.state(layout, found, plan))
    started = []
    monkeypatch.setattr(main, "start_app", lambda python, args: started.append(args) or 0)
    assert main.main(["--no-window", "--model", "/m", "--start"]) == 0
    assert started == [["--model", "/m", "--start"]]


def test_the_app_gets_the_users_library_path_not_the_frozen_launchers():
    bundle = "/opt/duetto/_internal"
    env = launch.clean_environment({
        "LD_LIBRARY_PATH": bundle, "LD_LIBRARY_PATH_ORIG": "/usr/local/lib",
        "QT_PLUGIN_PATH": bundle + "/PySide6/Qt/plugins", "HOME": "/home/u",
        "PYTHONPATH": "/x"}, bundle)
    assert env == {"LD_LIBRARY_PATH": "/usr/local/lib", "HOME": "/home/u"}
    assert launch.clean_environment({"LD_LIBRARY_PATH": "/mine"}, None) == {
        "LD_LIBRARY_PATH": "/mine"}


def test_time_left_comes_from_the_recent_rate():
    clock = iter([0.0, 1.0, 2.0]).__next__
    rate = Rate(clock=clock)
    for done in (0, 10_000_000, 20_000_000):
        rate.add(done)
    assert rate.seconds_left(600_000_000) == pytest.approx(60.0)
    assert time_text(60.0) == "about 1 min left"
    assert time_text(None) == "estimating time left…"


def test_the_window_runs_the_first_start_and_offers_resume_when_offline(built, qtbot):
    from duetto_launcher.window import SetupWindow

    job, layout, found, plan, network = built
    network.online = False
    window = SetupWindow(job, CPU, plan, builder.state(layout, found, plan))
    qtbot.addWidget(window)
    window.show()
    window.start()
    qtbot.waitUntil(lambda: window.quit.isVisible(), timeout=20_000)
    assert window.outcome == "failed" and "nothing was installed" in window.stage.text()
    assert window.cancel.text() == "Resume"
    network.online = True
    window.cancel.click()
    qtbot.waitUntil(lambda: window.outcome == "done", timeout=60_000)
    assert "the CPU build" in window.torch.text()
    assert window.bar.value() == 1000
    assert builder.state(layout, found, plan).kind == "ready"
