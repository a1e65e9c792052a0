"""`duetto models list | get | tiny` through the real command-line entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.__main__ import main
from app.model import download as dl
from app.model import families, registry
from app.model.contract import BackendError, Quant


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUETTO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_list_shows_every_entry_and_what_is_cached(capsys: pytest.CaptureFixture[str]) -> None:
    entry = registry.get("qwen2.5-omni-7b")
    folder = registry.local_dir_for(entry)
    folder.mkdir(parents=True)
    registry.record_download(entry, folder, "abcdef0123456789" + "0" * 24)

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "family", "license", "download"]
    for e in registry.entries():
        assert any(line.startswith(e.id + " ") for line in lines), e.id
    row7 = next(line for line in lines if line.startswith("qwen2.5-omni-7b "))
    planned = entry.vram_gib[Quant.BF16]
    assert "yes @abcdef0123" in row7 and "22.4 GB" in row7 and f"{planned:.1f} GiB" in row7
    row_minicpm = next(line for line in lines if line.startswith("minicpm-o-4.5 "))
    assert "not yet" not in row_minicpm and "GiB" in row_minicpm


def test_plan_prints_each_part_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["models", "plan", "qwen2.5-omni-3b", "--context", "8192"]) == 0
    out = capsys.readouterr().out
    for part in ("thinker", "vision encoder", "audio encoder", "talker", "vocoder",
                 "thinker context", "talker context", "working memory", "total:"):
        assert part in out, part
    assert main(["models", "plan", "--json", "--quant", "int8", "--context", "4096"]) == 0
    plans = json.loads(capsys.readouterr().out)
    assert [p["id"] for p in plans] == [e.id for e in registry.entries() if e.supported]
    for p in plans:
        assert {"id", "quant", "context_tokens", "total_gib", "parts"} <= set(p)
        assert p["quant"] == "int8"
        assert p["total_gib"] == pytest.approx(
            max(sum(x["bytes"] for x in p["parts"] if x["where"] == "device"),
                p["load_gib"] * 2**30) / 2**30, abs=1e-3)
    moshi = next(p for p in plans if p["id"] == "moshiko")
    assert moshi["context_tokens"] == 3000 and moshi["context_unit"] == "frames"


def test_plan_picks_the_longest_context_for_a_card(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "plan", "qwen2.5-omni-7b", "--free-gib", "7.5"]) == 0
    out = capsys.readouterr().out
    assert "the longest that fits" in out
    assert main(["models", "plan", "qwen2.5-omni-7b", "--quant", "bf16",
                 "--free-gib", "7"]) == 2
    err = capsys.readouterr().err
    assert "nothing was loaded" in err and "nf4 with up to" in err


def test_plan_of_what_cannot_run(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A family whose backend lacks a part users need is listed but has no plan.
    import dataclasses

    from app.model import families

    monkeypatch.setitem(families.FAMILIES, "minicpm-o",
                        dataclasses.replace(families.FAMILIES["minicpm-o"], complete=False))
    assert main(["models", "plan", "minicpm-o-4.5"]) == 2
    assert "no memory plan" in capsys.readouterr().err


def test_get_unknown_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "get", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model id 'nope'" in err
    assert "Traceback" not in err


def test_get_offline(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "get", "qwen2.5-omni-7b"]) == 2
    err = capsys.readouterr().err
    assert "duetto models get: cannot download qwen2.5-omni-7b" in err
    assert "duetto --model DIR" in err


def test_get_prints_the_pinned_revision(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_download(entry: registry.RegistryEntry, progress: Any, cancel: Any,
                      **kwargs: Any) -> Path:
        calls.append(kwargs)
        folder = registry.local_dir_for(entry)
        folder.mkdir(parents=True)
        registry.record_download(entry, folder, "9" * 40)
        return folder

    monkeypatch.setattr(dl, "download", fake_download)
    assert main(["models", "get", "qwen2.5-omni-3b", "--revision", "main"]) == 0
    out = capsys.readouterr().out
    assert "at revision " + "9" * 40 in out
    assert calls == [{"revision": "main", "show_bar": True}]


def test_get_reports_a_failed_download(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Path:
        raise BackendError("the download of x failed (boom)", hint="run it again")

    monkeypatch.setattr(dl, "download", broken)
    assert main(["models", "get", "qwen2.5-omni-3b"]) == 2
    assert "failed (boom) (run it again)" in capsys.readouterr().err


def test_tiny_unknown_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "tiny", "nope", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "unknown model family 'nope'" in err and "qwen2.5-omni" in err


def test_tiny_dispatches_with_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    got: dict[str, Any] = {}

    def builder(folder: Path, *, min_answer_tokens: int = 8, seed: int = 0) -> Path:
        got.update(folder=folder, min_answer_tokens=min_answer_tokens, seed=seed)
        return folder

    real_load = families.load_object
    monkeypatch.setattr(families, "load_object",
                        lambda path: builder if path.endswith(":build_tiny") else real_load(path))
    target = tmp_path / "tiny"
    assert main(["models", "tiny", "qwen2.5-omni", str(target), "--min-answer-tokens", "3",
                 "--seed", "7"]) == 0
    assert got == {"folder": target, "min_answer_tokens": 3, "seed": 7}
    assert capsys.readouterr().out.strip() == str(target)


def test_tiny_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "tiny", "qwen2.5-omni", str(tmp_path), "--min-answer-tokens",
                 "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_family_table_points_at_real_code() -> None:
    for name in families.known():
        assert callable(families.tiny_builder(name)), name
        assert isinstance(families.backend_class(name), type), name
    with pytest.raises(BackendError, match="unknown model family"):
        families.get("gemini")
