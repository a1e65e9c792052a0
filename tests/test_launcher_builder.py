"""The launcher builds, repairs and updates a real environment with the real uv, from tiny
real wheels served by a FAKE NETWORK (tests/launcher_fakes.py); the Python runtime the
installer would carry is stood in for by a link to this interpreter."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
from duetto_launcher import builder, environment
from duetto_launcher import payload as payload_mod
from duetto_launcher.builder import Builder, BuildError
from duetto_launcher.download import Cancelled, Downloader
from duetto_launcher.environment import Layout
from duetto_launcher.torch_choice import TorchChoice

from tests.launcher_fakes import Recorder, make_payload

APP = [("alpha-sim", "1.0"), ("beta-sim", "2.0")]
CPU = TorchChoice("cpu", "No NVIDIA GPU was found (a test).")


def _setup(tmp_path, app=APP, version="0.1.0", torch="2.13.0"):
    # 100 KB wheels, torch 400 KB: two download chunks, so a cancel can fall inside it.
    folder, network = make_payload(tmp_path, app, {"cpu": torch}, app_version=version, kb=100)
    found = payload_mod.read(folder)
    return found, network, found.plan("cpu")


def _builder(layout, found, network, cancel=None):
    listener = Recorder()
    job = Builder(layout, found, listener, Downloader(layout.downloads, network, cancel))
    return job, listener


def _imports(layout, module):
    done = subprocess.run([str(layout.python()), "-c", f"import {module}; print({module}."
                           "VERSION)"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_first_start_builds_the_environment_and_later_starts_find_it_ready(tmp_path):
    found, network, plan = _setup(tmp_path)
    layout = Layout(tmp_path / "data" / "environment")
    assert builder.state(layout, found, plan).kind == "missing"
    job, told = _builder(layout, found, network)
    job.ensure(CPU, plan, builder.state(layout, found, plan))
    assert builder.state(layout, found, plan).kind == "ready"
    assert _imports(layout, "alpha_sim") == "1.0" and _imports(layout, "torch_sim") == "2.13.0"
    assert _imports(layout, "duetto_sim") == "0.1.0"  # the wheel the installer carries
    assert environment.read_marker(layout.env).torch_build == "cpu"
    assert any("the CPU build" in line for line in told.lines)
    assert told.steps[-1][1] == told.steps[-1][2] > 0  # bytes so far reached the total
    assert not layout.building.exists() and not layout.downloads.exists()


def test_offline_first_start_says_one_sentence_and_leaves_nothing(tmp_path):
    found, network, plan = _setup(tmp_path)
    network.online = False
    layout = Layout(tmp_path / "data" / "environment")
    job, told = _builder(layout, found, network)
    with pytest.raises(BuildError) as raised:
        job.ensure(CPU, plan, builder.state(layout, found, plan))
    assert str(raised.value) == ("Duetto could not reach the internet to download its "
                                 "libraries: connect and start Duetto again; nothing was "
                                 "installed.")
    assert told.lines == []  # the sentence is all that is said
    assert not layout.root.exists()


def test_a_network_lost_mid_download_keeps_what_came_and_says_so(tmp_path):
    found, network, plan = _setup(tmp_path)
    layout = Layout(tmp_path / "data" / "environment")
    job, _ = _builder(layout, found, network)
    network.break_after = 150_000  # inside the 400 KB torch wheel, after the others
    with pytest.raises(BuildError, match="What was downloaded is kept"):
        job.ensure(CPU, plan, builder.state(layout, found, plan))
    assert not layout.env.exists() and not layout.building.exists()
    assert any(p.name.endswith(".part") for p in layout.downloads.iterdir())


def test_a_cancelled_first_start_resumes_and_leaves_no_half_environment(tmp_path):
    found, network, plan = _setup(tmp_path)
    layout = Layout(tmp_path / "data" / "environment")
    cancel = threading.Event()
    job, _ = _builder(layout, found, network, cancel)
    job.listener.progress = lambda step: cancel.set() if step.package == "torch-sim" else None
    with pytest.raises(Cancelled):
        job.ensure(CPU, plan, builder.state(layout, found, plan))
    assert not layout.env.exists() and not layout.building.exists()
    assert builder.state(layout, found, plan).kind == "missing"
    kept = sum(p.stat().st_size for p in layout.downloads.iterdir())
    assert kept > 200_000
    cancel.clear()
    network.requests.clear()
    job, _ = _builder(layout, found, network)
    job.ensure(CPU, plan, builder.state(layout, found, plan))
    assert builder.state(layout, found, plan).kind == "ready"
    assert any(start > 0 for _, start in network.requests)  # a .part went on, not anew


def test_a_deleted_package_is_found_and_repaired_from_the_same_lock(tmp_path):
    found, network, plan = _setup(tmp_path)
    layout = Layout(tmp_path / "data" / "environment")
    job, _ = _builder(layout, found, network)
    job.ensure(CPU, plan, builder.state(layout, found, plan))
    site = environment.site_packages(layout.env)
    shutil.rmtree(site / "beta_sim")
    now = builder.state(layout, found, plan)
    assert now.kind == "damaged" and "beta-sim" in now.detail
    network.requests.clear()
    job, _ = _builder(layout, found, network)
    job.ensure(CPU, plan, now)
    assert builder.state(layout, found, plan).kind == "ready"
    assert {url.rsplit("/", 1)[1] for url, _ in network.requests} == {
        "beta_sim-2.0-py3-none-any.whl"}  # only the damaged package was fetched


def test_a_newer_installer_updates_in_place_and_keeps_user_files(tmp_path):
    found, network, plan = _setup(tmp_path)
    layout = Layout(tmp_path / "data" / "environment")
    job, _ = _builder(layout, found, network)
    job.ensure(CPU, plan, builder.state(layout, found, plan))
    recordings = tmp_path / "data" / "recordings"
    recordings.mkdir()
    (recordings / "talk.wav").write_bytes(b"RIFF")

    newer, network2, plan2 = _setup(tmp_path, [("alpha-sim", "1.0"), ("gamma-sim", "3.0")],
                                    version="0.2.0", torch="2.13.1")
    now = builder.state(layout, newer, plan2)
    assert now.kind == "update" and "from 0.1.0 to 0.2.0" in now.detail
    job, _ = _builder(layout, newer, network2)
    job.ensure(CPU, plan2, now)
    assert builder.state(layout, newer, plan2).kind == "ready"
    assert _imports(layout, "torch_sim") == "2.13.1" and _imports(layout, "gamma_sim") == "3.0"
    assert _imports(layout, "beta_sim") is None  # no longer in the lock: removed
    assert _imports(layout, "duetto_sim") == "0.2.0"
    fetched = {url.rsplit("/", 1)[1] for url, _ in network2.requests}
    assert not any(name.startswith("alpha_sim") for name in fetched)  # unchanged: kept
    assert (recordings / "talk.wav").read_bytes() == b"RIFF"
