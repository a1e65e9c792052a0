"""Wheels are downloaded resumably and checked against the lock (FAKE NETWORK: files
served from memory, see tests/launcher_fakes.py)."""

from __future__ import annotations

import hashlib
import threading

import pytest
from duetto_launcher.download import CHUNK, Cancelled, Downloader, DownloadError
from duetto_launcher.plan import Wheel

from tests.launcher_fakes import FakeNetwork


def _wheel(data: bytes, name: str = "pkg") -> Wheel:
    return Wheel(name=name, version="1.0", filename=f"{name}-1.0-py3-none-any.whl",
                 size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                 url=f"https://x.invalid/{name}.whl")


DATA = bytes(range(256)) * (CHUNK // 64)  # four chunks


def test_progress_counts_every_byte_of_every_package(tmp_path):
    wheels = [_wheel(DATA, "a"), _wheel(DATA[:1000], "b")]
    network = FakeNetwork({w.url: (DATA if w.name == "a" else DATA[:1000]) for w in wheels})
    steps = []
    files = Downloader(tmp_path, network).fetch_all(wheels, steps.append)
    assert [f.read_bytes() for f in files] == [DATA, DATA[:1000]]
    done = [s.done_bytes for s in steps]
    assert done == sorted(done) and done[-1] == steps[-1].total_bytes == len(DATA) + 1000
    assert {s.package for s in steps} >= {"a", "b"}


def test_a_broken_transfer_resumes_where_it_stopped(tmp_path):
    wheel = _wheel(DATA)
    network = FakeNetwork({wheel.url: DATA})
    network.break_after = 2 * CHUNK
    downloader = Downloader(tmp_path, network)
    with pytest.raises(DownloadError, match="resumes from there"):
        downloader.fetch(wheel)
    assert (tmp_path / (wheel.filename + ".part")).stat().st_size == 2 * CHUNK
    network.break_after = None
    assert downloader.fetch(wheel).read_bytes() == DATA
    assert network.requests[-1] == (wheel.url, 2 * CHUNK)  # only the rest was asked for
    assert not (tmp_path / (wheel.filename + ".part")).exists()


def test_a_server_that_cannot_resume_sends_it_all_again(tmp_path):
    wheel = _wheel(DATA)
    network = FakeNetwork({wheel.url: DATA})
    network.break_after = CHUNK
    with pytest.raises(DownloadError):
        Downloader(tmp_path, network).fetch(wheel)
    network.break_after, network.ranges_honoured = None, False
    assert Downloader(tmp_path, network).fetch(wheel).read_bytes() == DATA


def test_bytes_that_do_not_match_the_lock_are_thrown_away(tmp_path):
    wheel = _wheel(DATA)
    network = FakeNetwork({wheel.url: DATA[:-1] + b"X"})
    with pytest.raises(DownloadError, match="sha256"):
        Downloader(tmp_path, network).fetch(wheel)
    assert list(tmp_path.iterdir()) == []


def test_cancel_keeps_what_came(tmp_path):
    wheel = _wheel(DATA)
    cancel = threading.Event()
    network = FakeNetwork({wheel.url: DATA})
    downloader = Downloader(tmp_path, network, cancel)

    def step(done):
        if done >= CHUNK:
            cancel.set()

    with pytest.raises(Cancelled):
        downloader.fetch(wheel, step)
    assert (tmp_path / (wheel.filename + ".part")).stat().st_size == CHUNK
    assert downloader.missing_bytes([wheel]) == len(DATA) - CHUNK


def test_offline_is_told_apart_from_a_server_error(tmp_path):
    wheel = _wheel(DATA)
    network = FakeNetwork({wheel.url: DATA})
    network.online = False
    with pytest.raises(DownloadError) as raised:
        Downloader(tmp_path, network).fetch(wheel)
    assert raised.value.offline


def test_a_wheel_from_a_local_folder_comes_through_the_real_opener(tmp_path):
    """A lock made with --find-links names file: URLs (no HTTP status, no size)."""
    source = tmp_path / "mirror" / "pkg-1.0-py3-none-any.whl"
    source.parent.mkdir()
    source.write_bytes(DATA)
    wheel = _wheel(DATA)
    wheel = Wheel(**{**wheel.__dict__, "url": source.as_uri()})
    assert Downloader(tmp_path / "d").fetch(wheel).read_bytes() == DATA
