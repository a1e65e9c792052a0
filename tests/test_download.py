"""Downloads: a faked Hub for the happy path, progress and cancel; the real
huggingface_hub against a closed port for the offline path."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.model import download as dl
from app.model import registry
from app.model.contract import BackendError

SHA = "3c0e0f6a1b2c3d4e5f60718293a4b5c6d7e8f901"
ENTRY = registry.get("qwen2.5-omni-3b")


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUETTO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


class _FakeHub:
    """model_info and snapshot_download as huggingface_hub would answer them."""

    def __init__(self, files: dict[str, int]) -> None:
        self.files = files
        self.calls: list[dict[str, Any]] = []

    def model_info(self, repo_id: str, **kwargs: Any) -> SimpleNamespace:
        self.calls.append({"model_info": repo_id, **kwargs})
        siblings = [SimpleNamespace(rfilename=n, size=s) for n, s in self.files.items()]
        return SimpleNamespace(sha=SHA, siblings=siblings)

    def snapshot_download(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append({"snapshot": repo_id, **kwargs})
        folder = Path(kwargs["local_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        bar_cls = kwargs["tqdm_class"]
        # The shapes huggingface_hub uses: a file counter, then byte bars.
        counter = bar_cls(total=len(self.files), desc="Fetching files", name="x")
        written = bar_cls(total=0, unit="B", unit_scale=True,
                          desc="Reconstructing (incomplete total...)", name="y")
        for name, size in self.files.items():
            for _ in range(4):
                written.update(size // 4)
            (folder / name).write_bytes(b"\0" * size)
            counter.update(1)
        written.close()
        counter.close()
        return str(folder)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> _FakeHub:
    import huggingface_hub

    fake = _FakeHub({"config.json": 400, "model.safetensors": 4000})
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, repo_id, **kw: fake.model_info(repo_id, **kw))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def test_download_records_the_exact_revision(hub: _FakeHub) -> None:
    seen: list[tuple[str, float]] = []
    folder = dl.download(ENTRY, lambda what, frac: seen.append((what, frac)))
    assert folder == registry.local_dir_for(ENTRY)
    assert (folder / "model.safetensors").stat().st_size == 4000
    snapshot = next(c for c in hub.calls if "snapshot" in c)
    assert snapshot["revision"] == SHA  # pinned to the commit model_info named
    info = next(c for c in hub.calls if "model_info" in c)
    assert info["timeout"] <= 10
    source = registry.resolve(ENTRY.id)
    assert source.revision == SHA and source.local_dir == folder.resolve()

    fractions = [f for what, f in seen if what == "downloading"]
    assert fractions == sorted(fractions) and len(fractions) == 8
    assert fractions[-1] == pytest.approx(1.0)
    assert seen[-1] == ("downloaded", 1.0)


def test_revision_is_passed_to_the_hub(hub: _FakeHub) -> None:
    dl.download(ENTRY, lambda *_: None, revision="v1.0")
    info = next(c for c in hub.calls if "model_info" in c)
    assert info["revision"] == "v1.0"


def test_cancel_stops_and_records_nothing(hub: _FakeHub) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(dl.DownloadCancelled) as info:
        dl.download(ENTRY, lambda *_: None, cancel)
    assert "resume" in info.value.hint
    assert registry.cached() == []


def test_not_enough_disk(hub: _FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: SimpleNamespace(free=1000))
    with pytest.raises(BackendError, match="free") as info:
        dl.download(ENTRY, lambda *_: None)
    assert "DUETTO_MODELS_DIR" in info.value.hint
    assert not any("snapshot" in c for c in hub.calls)


def _assert_offline_message(err: BackendError) -> None:
    text = str(err)
    assert "cannot download qwen2.5-omni-3b" in text
    assert "duetto --model DIR" in err.hint
    assert "hf download Qwen/Qwen2.5-Omni-3B" in err.hint


def test_hf_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("offline mode must not touch the network")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", never)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError) as info:
        dl.download(ENTRY, lambda *_: None)
    assert "offline mode" in str(info.value)
    _assert_offline_message(info.value)


def test_unreachable_hub_fails_fast_with_real_huggingface_hub(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed local port
    start = time.monotonic()
    with pytest.raises(BackendError) as info:
        dl.download(ENTRY, lambda *_: None)
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert "not reachable" in str(info.value)
    _assert_offline_message(info.value)
    assert registry.cached() == []


def test_gated_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    import huggingface_hub
    from huggingface_hub import errors

    response = httpx2.Response(401, request=httpx2.Request("GET", "http://hub/api"))

    def gated(self: Any, repo_id: str, **kwargs: Any) -> None:
        raise errors.GatedRepoError("gated", response=response)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", gated)
    with pytest.raises(BackendError) as info:
        dl.download(registry.get("personaplex-7b"), lambda *_: None)
    assert "gated" in str(info.value) and "accept the terms" in info.value.hint


def test_cli_offline_exits_2_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9",
           "DUETTO_MODELS_DIR": str(tmp_path / "m")}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "app", "models", "get", "qwen2.5-omni-3b"],
                          capture_output=True, text=True, env=env, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert time.monotonic() - start < 10
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "duetto --model DIR" in done.stderr
