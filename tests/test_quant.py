"""Quantization helpers: dtype choice, bnb configs, support answers, and a real
bitsandbytes quantization of a tiny Llama on this CPU through transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.model import quant as q
from app.model.contract import Quant


def test_cpu_dtype_is_float32_for_every_quant() -> None:
    for quant in Quant:
        assert q.torch_dtype(quant, "cpu") is torch.float32


def test_cuda_dtype_follows_bf16_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(q, "_cuda_bf16", lambda device: True)
    assert q.torch_dtype(Quant.BF16, "cuda") is torch.bfloat16
    assert q.torch_dtype(Quant.NF4, "cuda:0") is torch.bfloat16
    assert q.torch_dtype(Quant.FP16, "cuda") is torch.float16
    monkeypatch.setattr(q, "_cuda_bf16", lambda device: False)
    assert q.torch_dtype(Quant.BF16, "cuda") is torch.float16
    assert q.compute_dtype("cuda") is torch.float16


def test_bad_device_string_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown device 'gpu-please'"):
        q.torch_dtype(Quant.BF16, "gpu-please")
    ok, reason = q.quant_support(Quant.NF4, "gpu-please")
    assert not ok and "unknown device" in reason


def test_bnb_config_per_quant() -> None:
    assert q.bnb_config(Quant.BF16, ["lm_head"]) is None
    assert q.bnb_config(Quant.FP16, []) is None
    nf4 = q.bnb_config(Quant.NF4, ["lm_head", "talker.codec_head", "lm_head"], device="cpu")
    assert nf4 is not None
    assert nf4.load_in_4bit and not nf4.load_in_8bit
    assert nf4.bnb_4bit_quant_type == "nf4"
    assert nf4.bnb_4bit_use_double_quant
    assert nf4.bnb_4bit_compute_dtype is torch.bfloat16
    assert nf4.llm_int8_skip_modules == ["lm_head", "talker.codec_head"]
    int8 = q.bnb_config(Quant.INT8, [], device="cpu")
    assert int8 is not None and int8.load_in_8bit and not int8.load_in_4bit
    assert int8.llm_int8_skip_modules is None  # transformers then skips the head itself


def test_cuda_capability_floors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Old Card")
    monkeypatch.setattr(q, "_bnb_import_error", lambda: "")
    for cap, nf4_ok, int8_ok in [((5, 2), False, False), ((6, 1), True, False),
                                 ((7, 5), True, True), ((9, 0), True, True)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i, c=cap: c)
        ok4, why4 = q.quant_support(Quant.NF4, "cuda")
        ok8, why8 = q.quant_support(Quant.INT8, "cuda:0")
        assert (ok4, ok8) == (nf4_ok, int8_ok), cap
        if not ok8:
            assert "7.5" in why8 and f"{cap[0]}.{cap[1]}" in why8
        if not ok4:
            assert "6.0" in why4


def test_missing_bitsandbytes_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(q, "_bnb_import_error", lambda: "bitsandbytes does not import here (X)")
    ok, reason = q.quant_support(Quant.INT8, "cpu")
    assert not ok and "bitsandbytes does not import" in reason
    # 16-bit needs no bitsandbytes at all.
    assert q.quant_support(Quant.BF16, "cpu") == (True, "")


def test_no_cuda_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    ok, reason = q.quant_support(Quant.NF4, "cuda")
    assert not ok and "no CUDA device" in reason


def test_quant_support_answers_on_this_cpu() -> None:
    for quant in Quant:
        ok, reason = q.quant_support(quant, "cpu")
        print(f"{quant.value}: {ok} {reason!r}")
        assert isinstance(ok, bool)
        if not ok:
            assert reason
    ok, note = q.quant_support(Quant.NF4, "cpu")
    if ok and q.cpu_has_avx512_bf16():
        assert "% 64" in note and "% 32" in note


class _Shapes(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.good = torch.nn.Linear(128, 64)
        self.bad_in = torch.nn.Linear(48, 64)
        self.bad_out = torch.nn.Linear(64, 40)
        self.block = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 32))
        self.conv = torch.nn.Conv1d(3, 5, 3)


def test_unquantizable_linears(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _Shapes()
    monkeypatch.setattr(q, "cpu_has_avx512_bf16", lambda: True)
    assert q.unquantizable_linears(model, Quant.NF4, device="cpu") == [
        "bad_in", "bad_out", "block.1"
    ]
    assert q.unquantizable_linears(model, Quant.INT8, device="cpu") == []
    assert q.unquantizable_linears(model, Quant.NF4, device="cuda") == []
    monkeypatch.setattr(q, "cpu_has_avx512_bf16", lambda: False)
    assert q.unquantizable_linears(model, Quant.NF4, device="cpu") == []


def test_unquantizable_linears_matches_bitsandbytes_here() -> None:
    """The shape rule is what bitsandbytes really does: skipped shapes fail, kept ones run."""
    ok, reason = q.quant_support(Quant.NF4, "cpu")
    if not ok:
        pytest.skip(reason)
    if not q.cpu_has_avx512_bf16():
        pytest.skip("this CPU has no AVX512-BF16: the 4-bit path has no shape rule")
    import bitsandbytes as bnb

    model = _Shapes()
    flagged = set(q.unquantizable_linears(model, Quant.NF4, device="cpu"))
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        layer = bnb.nn.Linear4bit(module.in_features, module.out_features,
                                  compute_dtype=torch.bfloat16, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(module.weight.data, requires_grad=False,
                                         quant_type="nf4")
        layer = layer.to("cpu").eval()
        try:
            with torch.no_grad():
                layer(torch.randn(1, module.in_features))
            failed = False
        except (AssertionError, RuntimeError):
            failed = True
        assert failed == (name in flagged), name


def _tiny_llama(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4])
def test_real_bitsandbytes_quantization_through_transformers(
    tmp_path: Path, quant: Quant
) -> None:
    ok, reason = q.quant_support(quant, "cpu")
    if not ok:
        pytest.skip(reason)
    import bitsandbytes as bnb
    from transformers import LlamaForCausalLM

    folder = _tiny_llama(tmp_path / "llama")
    with torch.device("meta"):
        from transformers import AutoConfig

        skeleton = LlamaForCausalLM(AutoConfig.from_pretrained(folder))
    skip = ["lm_head", *q.unquantizable_linears(skeleton, quant, device="cpu")]
    model = LlamaForCausalLM.from_pretrained(
        folder,
        quantization_config=q.bnb_config(quant, skip, device="cpu"),
        dtype=q.torch_dtype(quant, "cpu"),
        device_map="cpu",
    ).eval()
    want = bnb.nn.Linear4bit if quant is Quant.NF4 else bnb.nn.Linear8bitLt
    layers = model.model.layers
    quantized = [
        name for name, m in layers.named_modules() if isinstance(m, want)
    ]
    # q, k, v, o, gate, up, down in each of the 2 layers, less what the CPU cannot take:
    # down_proj (96 -> 64) breaks the AVX512-BF16 4-bit rule and must have been skipped,
    # or the forward below would fail inside bitsandbytes.
    flagged = [name for name in skip if name.startswith("model.layers.")]
    if quant is Quant.NF4 and q.cpu_has_avx512_bf16():
        assert flagged == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert len(quantized) == 14 - len(flagged), quantized
    stored = torch.uint8 if quant is Quant.NF4 else torch.int8
    for name, m in layers.named_modules():
        if isinstance(m, want):
            assert m.weight.dtype == stored, name
    assert not isinstance(model.lm_head, want)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 5, 9, 3]])).logits
    assert logits.shape == (1, 4, 128)
    assert torch.isfinite(logits).all()
