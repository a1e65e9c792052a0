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
from app.model.contract import BackendError

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


def test_header_tensors_read_headers_only(tmp_path: Path) -> None:
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
    tensors = ck.header_tensors(path)
    assert tensors["a.weight"].shape == (1000, 1000) and tensors["a.weight"].is_meta
    assert tensors["a.weight"].dtype == torch.bfloat16


def test_a_checkpoint_whose_shard_was_cut_short_is_refused_by_name(tmp_path: Path) -> None:
    folder = _qwen_folder(tmp_path, shards=2)
    shard = sorted(folder.glob("*.safetensors"))[1]
    with open(shard, "r+b") as handle:  # the last shard's download stopped early
        handle.truncate(shard.stat().st_size - 16)
    error = _raises(folder)
    assert "cut short" in str(error) and shard.name in str(error)


def test_weights_cut_short_are_named_before_loading(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    weights = folder / "model.safetensors"
    save_file({"a.weight": torch.zeros(256, 256, dtype=torch.bfloat16)}, weights)
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:  # a download that stopped half-way
        handle.truncate(size // 2)
    with pytest.raises(BackendError, match="cut short") as caught:
        ck.header_tensors(weights)
    assert weights.name in str(caught.value)
    assert "download" in caught.value.hint


def test_damaged_header(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(BackendError, match="not a readable safetensors file"):
        ck.header_tensors(path)


def test_memory_mapped_tensors_equal_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    saved = {"w": torch.randn(3, 5).to(torch.bfloat16), "steps": torch.arange(4),
             "empty": torch.zeros(0, 2)}
    save_file(saved, path)
    mapped = ck.mmap_safetensors(path)
    for name, t in saved.items():
        assert torch.equal(mapped[name], t), name
    # Private: writing to a mapped tensor never writes the file.
    mapped["w"].zero_()
    assert torch.equal(ck.mmap_safetensors(path)["w"], saved["w"])


def test_free_memory_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (4 * ck.GIB, 24 * ck.GIB))
    assert ck.available_bytes("cuda:0") == 4 * ck.GIB


def test_cuda_asked_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="no CUDA GPU"):
        ck.available_bytes("cuda")


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
