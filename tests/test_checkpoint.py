"""Checkpoint checks, size estimates, fit checks and load-error translation."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.model import checkpoint as ck
from app.model.contract import BackendError, Quant

QWEN_CONFIG = {"architectures": ["Qwen2_5OmniForConditionalGeneration"],
               "model_type": "qwen2_5_omni"}


def _qwen_folder(root: Path, *, shards: int = 2) -> Path:
    """A folder shaped like a Qwen2.5-Omni checkpoint, with tiny sharded weights."""
    folder = root / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN_CONFIG))
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        key = f"thinker.model.layers.{i}.mlp.up_proj.weight"
        save_file({key: torch.zeros(4, 8, dtype=torch.bfloat16)}, folder / name)
        weight_map[key] = name
    (folder / ck.SAFETENSORS_INDEX).write_text(json.dumps({"weight_map": weight_map}))
    torch.save({"Chelsie": {}}, folder / "spk_dict.pt")
    (folder / "tokenizer.json").write_text("{}")
    return folder


def _raises(folder: Path, family: str = "qwen2.5-omni") -> BackendError:
    with pytest.raises(BackendError) as info:
        ck.validate_checkpoint(folder, family)
    assert info.value.hint, "every error needs a way out"
    return info.value


def test_a_complete_folder_passes(tmp_path: Path) -> None:
    ck.validate_checkpoint(_qwen_folder(tmp_path), "qwen2.5-omni")


def test_missing_folder(tmp_path: Path) -> None:
    err = _raises(tmp_path / "nowhere")
    assert "does not exist" in str(err) and "duetto models get" in err.hint


def test_file_instead_of_folder(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    assert "not a model folder" in str(_raises(file))


def test_missing_config(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path)
    (folder / "config.json").unlink()
    err = _raises(folder)
    assert "no config.json" in str(err)


def test_unreadable_config(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path)
    (folder / "config.json").write_text("{not json")
    err = _raises(folder)
    assert "config.json cannot be read" in str(err) and "damaged" in err.hint


def test_wrong_architecture_names_found_and_expected(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path)
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    err = _raises(folder)
    assert "LlamaForCausalLM" in str(err) and "'llama'" in str(err)
    assert "Qwen2_5OmniForConditionalGeneration" in str(err)
    assert "Qwen/Qwen2.5-Omni" in err.hint


def test_another_familys_checkpoint_says_which(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path)
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["MoshiForConditionalGeneration"], "model_type": "moshi"}))
    assert "looks like a moshi checkpoint" in _raises(folder).hint


def test_model_type_alone_is_enough(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_5_omni"}))
    ck.validate_checkpoint(folder, "qwen2.5-omni")


def test_missing_shard(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path, shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    err = _raises(folder)
    assert "1 of the 3 weight shards" in str(err)
    assert "model-00002-of-00003.safetensors" in str(err)
    assert "resumes" in err.hint


def test_no_weights_at_all(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path, shards=1)
    (folder / ck.SAFETENSORS_INDEX).unlink()
    (folder / "model-00001-of-00001.safetensors").unlink()
    assert "holds no weights" in str(_raises(folder))


def test_missing_spk_dict(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path)
    (folder / "spk_dict.pt").unlink()
    err = _raises(folder)
    assert "spk_dict.pt" in str(err) and "speakers" in str(err)


def test_tokenizer_alternatives(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path)
    (folder / "tokenizer.json").unlink()
    err = _raises(folder)
    assert "tokenizer.json or vocab.json + merges.txt" in str(err)
    (folder / "vocab.json").write_text("{}")
    _raises(folder)  # vocab.json alone is not a tokenizer
    (folder / "merges.txt").write_text("")
    ck.validate_checkpoint(folder, "qwen2.5-omni")


def test_unknown_family(tmp_path: Path) -> None:
    err = _raises(_qwen_folder(tmp_path), family="gpt-9")
    assert "unknown model family 'gpt-9'" in str(err) and "qwen2.5-omni" in err.hint


def test_estimate_from_headers(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    save_file(
        {
            "model.layers.0.mlp.up_proj.weight": torch.zeros(64, 128, dtype=torch.bfloat16),
            "model.layers.0.mlp.up_proj.bias": torch.zeros(64, dtype=torch.float32),
            "model.embed_tokens.weight": torch.zeros(100, 16, dtype=torch.float32),
            "model.norm.weight": torch.zeros(16, dtype=torch.bfloat16),
            "model.steps": torch.zeros(3, dtype=torch.int64),
        },
        folder / "model.safetensors",
    )
    linear, other = 64 * 128, 64 + 100 * 16 + 16
    ints = 3 * 8
    expect = {
        Quant.BF16: linear * 2 + other * 2 + ints,
        Quant.INT8: linear * 1 + other * 2 + ints,
        Quant.NF4: int(linear * (0.5 + 1 / 64 + 4 / (64 * 256))) + other * 2 + ints,
    }
    for quant, want in expect.items():
        assert abs(ck.estimate_weight_bytes(folder, quant) - want) <= 1, quant


def test_estimate_reads_headers_only(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    header = json.dumps({"a.weight": {"dtype": "BF16", "shape": [1000, 1000],
                                      "data_offsets": [0, 2_000_000]}}).encode()
    # The data section is a hole (a sparse file of the right size): headers are all
    # that is read.
    path = folder / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with open(path, "r+b") as handle:
        handle.truncate(8 + len(header) + 2_000_000)
    assert ck.estimate_weight_bytes(folder, Quant.BF16) == 2_000_000


def test_weights_cut_short_are_named_before_loading(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    weights = folder / "model.safetensors"
    save_file({"a.weight": torch.zeros(256, 256, dtype=torch.bfloat16)}, weights)
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:  # a download that stopped half-way
        handle.truncate(size // 2)
    with pytest.raises(BackendError, match="cut short") as caught:
        ck.estimate_weight_bytes(folder, Quant.BF16)
    assert weights.name in str(caught.value)
    assert "download" in caught.value.hint


def test_estimate_on_damaged_file(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(BackendError, match="not a readable safetensors file"):
        ck.estimate_weight_bytes(folder, Quant.NF4)


def test_does_not_fit_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    class _Mem:
        available = 3 * ck.GIB

    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Mem())
    ck.check_fits(2 * ck.GIB, "cpu")
    with pytest.raises(BackendError) as info:
        ck.check_fits(int(7.5 * ck.GIB), "cpu")
    assert "needs 7.5 GiB" in str(info.value) and "3.0 GiB available RAM" in str(info.value)
    assert "smaller model" in info.value.hint and "nf4" in info.value.hint


def test_does_not_fit_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (4 * ck.GIB, 24 * ck.GIB))
    ck.check_fits(3 * ck.GIB, "cuda:0")
    with pytest.raises(BackendError, match=r"needs 16.0 GiB but cuda:0 has only 4.0 GiB free GPU"):
        ck.check_fits(16 * ck.GIB, "cuda:0")


def test_cuda_asked_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="no CUDA GPU"):
        ck.check_fits(1, "cuda")


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
    ],
)
def test_gpu_oom(exc: BaseException) -> None:
    err = ck.explain_load_error(exc, "loading qwen2.5-omni-7b")
    assert str(err).startswith("out of GPU memory while loading qwen2.5-omni-7b")
    assert "lower quantization" in err.hint


def test_ram_oom() -> None:
    err = ck.explain_load_error(MemoryError(), "loading x")
    assert "out of system memory" in str(err)


def test_real_safetensors_error(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(Exception) as info:
        load_file(bad)
    err = ck.explain_load_error(info.value, "loading x")
    assert "damaged or incomplete" in str(err) and "duetto models get" in err.hint


def test_missing_file_errors(tmp_path: Path) -> None:
    missing = FileNotFoundError(2, "No such file or directory", str(tmp_path / "spk_dict.pt"))
    err = ck.explain_load_error(missing, "loading x")
    assert "missing" in str(err) and "spk_dict.pt" in str(err)
    hf_style = OSError("/m does not appear to have a file named model-00002-of-00005.safetensors")
    err = ck.explain_load_error(hf_style, "loading x")
    assert "missing" in str(err) and "model-00002-of-00005" in str(err)


def test_anything_else_still_says_what_failed(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise KeyError("talker.codec_head")
    except KeyError as exc:
        with caplog.at_level(logging.ERROR):
            err = ck.explain_load_error(exc, "loading tiny")
    assert "loading tiny failed" in str(err) and "talker.codec_head" in str(err)
    assert "log" in err.hint
    assert any(r.exc_info for r in caplog.records), "the traceback goes to the log"


def test_backend_errors_pass_through() -> None:
    original = BackendError("x", hint="y")
    assert ck.explain_load_error(original, "z") is original
