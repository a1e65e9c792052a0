"""The registry's data and the download manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.model import families, registry
from app.model.contract import BackendError, Quant


@pytest.fixture(autouse=True)
def _models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("DUETTO_MODELS_DIR", str(folder))
    return folder


def test_required_checkpoints_are_listed() -> None:
    hub_ids = {e.hub_id for e in registry.entries()}
    assert {"Qwen/Qwen2.5-Omni-3B", "Qwen/Qwen2.5-Omni-7B", "kyutai/moshiko-pytorch-bf16",
            "kmhf/hf-moshiko", "nvidia/personaplex-7b-v1", "openbmb/MiniCPM-o-4_5"} <= hub_ids
    ids = [e.id for e in registry.entries()]
    assert len(ids) == len(set(ids))


def test_every_entry_is_sourced_and_complete() -> None:
    for entry in registry.entries():
        assert entry.source and entry.license and entry.download_gb > 0, entry.id
        assert entry.format in {"transformers", "moshi"}
        if entry.family not in families.known():
            assert not entry.supported and dict(entry.vram_gib) == {}, entry.id
            continue  # no plan for what cannot run
        # A family still being built (MiniCPM-o until its speech path) has its plan
        # already, and stays unsupported.
        assert set(entry.vram_gib) == set(Quant), entry.id
        # Fewer bits never need more memory.
        assert entry.vram_gib[Quant.NF4] < entry.vram_gib[Quant.INT8] < entry.vram_gib[
            Quant.BF16], entry.id


def test_only_families_with_a_backend_are_supported() -> None:
    supported = {e.id for e in registry.entries() if e.supported}
    assert supported == {"qwen2.5-omni-3b", "qwen2.5-omni-7b", "moshiko-hf", "moshiko",
                         "personaplex-7b", "minicpm-o-4.5"}


def test_vram_figures_are_the_memory_plans() -> None:
    from app.model import memory_plan

    for entry_id in ("qwen2.5-omni-7b", "moshiko", "minicpm-o-4.5"):
        planned = memory_plan.plan_entry(entry_id, Quant.NF4)
        assert registry.get(entry_id).vram_gib[Quant.NF4] == round(planned.total_gib, 2)


def test_unknown_id() -> None:
    with pytest.raises(BackendError) as info:
        registry.get("gpt-omni")
    assert "unknown model id 'gpt-omni'" in str(info.value)
    assert "qwen2.5-omni-7b" in info.value.hint and "--model DIR" in info.value.hint


def test_manifest_round_trip(_models_dir: Path) -> None:
    entry = registry.get("qwen2.5-omni-3b")
    assert registry.cached() == []
    with pytest.raises(BackendError, match="not downloaded") as info:
        registry.resolve(entry.id)
    assert "duetto models get qwen2.5-omni-3b" in info.value.hint

    folder = registry.local_dir_for(entry)
    folder.mkdir(parents=True)
    sha = "0123456789abcdef0123456789abcdef01234567"
    registry.record_download(entry, folder, sha)

    source = registry.resolve(entry.id)
    assert source.local_dir == folder.resolve()
    assert source.revision == sha and source.hub_id == "Qwen/Qwen2.5-Omni-3B"
    [found] = registry.cached()
    assert (found.id, found.revision) == (entry.id, sha)
    on_disk = json.loads(registry.manifest_path().read_text())
    assert on_disk["models"][entry.id]["revision"] == sha

    # A second record keeps the first.
    other = registry.get("qwen2.5-omni-7b")
    registry.local_dir_for(other).mkdir()
    registry.record_download(other, registry.local_dir_for(other), "f" * 40)
    assert [c.id for c in registry.cached()] == ["qwen2.5-omni-3b", "qwen2.5-omni-7b"]


def test_deleted_folder_is_not_cached(_models_dir: Path) -> None:
    entry = registry.get("qwen2.5-omni-7b")
    folder = registry.local_dir_for(entry)
    folder.mkdir(parents=True)
    registry.record_download(entry, folder, "a" * 40)
    folder.rmdir()
    assert registry.cached() == []
    with pytest.raises(BackendError, match="no longer exists"):
        registry.resolve(entry.id)


def test_damaged_manifest(_models_dir: Path) -> None:
    _models_dir.mkdir(parents=True)
    registry.manifest_path().write_text("{oops")
    with pytest.raises(BackendError, match="cannot be read") as info:
        registry.cached()
    assert "delete it" in info.value.hint
    registry.manifest_path().write_text("[1, 2]")
    with pytest.raises(BackendError, match="expected form"):
        registry.resolve("qwen2.5-omni-3b")
