"""Loading tiny Moshi checkpoints: transformers' layout, the moshi package's layout
(PersonaPlex's), the same weights giving the same outputs, quantizations, bad folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from app.model import quant
from app.model.contract import (
    BackendError,
    Control,
    ModelSource,
    Persona,
    Quant,
    Unit,
    Voice,
)
from app.model.moshi import loader
from app.model.moshi.backend import MoshiBackend

moshi_tiny_factory = tiny_models.moshi_tiny_factory


def _load(folder: Path, q: Quant = Quant.BF16) -> loader.Loaded:
    return loader.load(ModelSource(local_dir=folder), q, lambda what, frac: None, device="cpu")


def _forward(loaded: loader.Loaded) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64, (1, 8, 5), generator=gen)
    ids = torch.randint(0, 128, (1, 5), generator=gen)
    with torch.no_grad():
        out = loaded.model(input_ids=ids, user_audio_codes=codes, moshi_audio_codes=codes)
        depth = loaded.model.depth_decoder(
            input_ids=torch.cat([ids[:, :1], codes[:, :7, 0]], 1),
            last_hidden_state=out.last_hidden_state[:, :1])
    return out.logits, depth.logits


def test_layouts_are_detected(moshi_tiny_factory) -> None:
    assert loader.detect_layout(moshi_tiny_factory()) == "transformers"
    assert loader.detect_layout(moshi_tiny_factory(layout="moshi")) == "moshi"


def test_moshi_layout_gives_the_same_outputs(moshi_tiny_factory) -> None:
    """The PersonaPlex-style folder (16-step depth transformer, fused step-major
    attention, interleaved rotary rows, SentencePiece tokenizer) maps onto exactly the
    transformers-format model built from the same weights."""
    a = _load(moshi_tiny_factory())
    b = _load(moshi_tiny_factory(layout="moshi"))
    assert (a.layout, b.layout) == ("transformers", "moshi")
    logits_a, depth_a = _forward(a)
    logits_b, depth_b = _forward(b)
    assert torch.allclose(logits_a, logits_b, atol=1e-5)
    assert torch.allclose(depth_a, depth_b, rtol=1e-4, atol=1e-4)
    assert a.delays == b.delays
    assert a.vocab.pad_id == b.vocab.pad_id == 3
    text = "<system> Hello there <system>"
    assert a.vocab.encode(text) == b.vocab.encode(text)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert set(sa) == set(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _conversation(folder: Path, units: int = 6) -> list[tuple]:
    backend = MoshiBackend(device="cpu")
    backend.load(ModelSource(local_dir=folder), Quant.BF16, lambda *_: None)
    backend.start(Persona("t", "Be brief.", voice=Voice(builtin="tiny_voice")))
    rng = np.random.default_rng(0)
    seen = []
    for i in range(units):
        audio = (0.1 * rng.standard_normal(1920)).astype(np.float32)
        for out in backend.step(Unit(i, i * 0.08, 0.08, 24000, audio), Control()):
            seen.append((out.decision, out.text,
                         None if out.speech is None else out.speech.audio.copy()))
    backend.close()
    return seen


def test_a_whole_conversation_is_the_same_in_both_layouts(moshi_tiny_factory) -> None:
    a = _conversation(moshi_tiny_factory())
    b = _conversation(moshi_tiny_factory(layout="moshi"))
    assert len(a) == len(b)
    for (da, ta, wa), (db, tb, wb) in zip(a, b, strict=True):
        assert da == db and ta == tb
        if wa is not None:
            assert np.allclose(wa, wb, atol=1e-5)


@pytest.mark.parametrize("q", [Quant.INT8, Quant.NF4])
@pytest.mark.parametrize("layout", ["transformers", "moshi"])
def test_quantized_loads(moshi_tiny_factory, q: Quant, layout: str) -> None:
    ok, why = quant.quant_support(q, "cpu")
    if not ok:
        pytest.skip(f"{q.value} does not run on this CPU: {why}")
    ref = _load(moshi_tiny_factory())
    got = _load(moshi_tiny_factory(layout=layout), q)
    linear = got.model.decoder.model.layers[0].self_attn.q_proj.linear
    assert type(linear).__name__ == ("Linear8bitLt" if q is Quant.INT8 else "Linear4bit")
    # Mimi and the depth transformer stay in floating point.
    assert next(got.model.audio_encoder.parameters()).dtype == torch.float32
    logits_ref, _ = _forward(ref)
    logits, depth = _forward(got)
    assert torch.isfinite(logits).all() and torch.isfinite(depth).all()
    # Quantization error, not a different model: the logits still agree closely.
    assert float(torch.corrcoef(torch.stack([logits.flatten(), logits_ref.flatten()]))[0, 1]) > 0.9


def test_missing_mimi_file_is_explained(moshi_tiny_factory, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(moshi_tiny_factory(layout="moshi"), folder)
    (folder / "tokenizer-e351c8d8-checkpoint125.safetensors").unlink()
    with pytest.raises(BackendError, match="neither"):
        _load(folder)


def test_wrong_family_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"architectures": ["Qwen2_5OmniForConditionalGeneration"],
         "model_type": "qwen2_5_omni"}))
    with pytest.raises(BackendError) as info:
        _load(tmp_path)
    assert "qwen2.5-omni" in info.value.hint


def test_missing_tokenizer_is_explained(moshi_tiny_factory, tmp_path: Path) -> None:
    folder = tmp_path / "no_tok"
    shutil.copytree(moshi_tiny_factory(), folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(BackendError, match="tokenizer"):
        _load(folder)


def test_cli_builds_a_tiny_moshi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.__main__ import main

    assert main(["models", "tiny", "moshi", str(tmp_path / "m")]) == 0
    assert loader.detect_layout(tmp_path / "m") == "transformers"
    assert (tmp_path / "m" / "voices" / "tiny_voice.wav").is_file()


@pytest.mark.parametrize("layout", ["transformers", "moshi"])
def test_the_checkpoints_delays_are_used(moshi_tiny_factory, layout: str) -> None:
    """A checkpoint trained with another acoustic delay says so (Kyutai's config.json
    `delays`; duetto.json for a tiny transformers folder) and the stepper follows it."""
    delays = (0, 0, 2, 2, 2, 2, 2, 2, 2, 0, 2, 2, 2, 2, 2, 2, 2)
    backend = MoshiBackend(device="cpu")
    backend.load(ModelSource(local_dir=moshi_tiny_factory(layout=layout, delays=delays)),
                 Quant.BF16, lambda *_: None)
    assert backend.loaded.delays == delays
    assert backend._stepper.delays == delays and backend._stepper.max_delay == 2
    backend.close()


# --- no storage kept twice, no precision lost (faults a GPU load would show) -------------


def _bf16_moshi_layout(folder: Path) -> tuple[dict, dict]:
    """The tiny moshi-format LM and Mimi as a bf16 GPU load reads them (file in bf16,
    so no cast copies anything on the way), here on the CPU."""
    from safetensors.torch import load_file

    from app.model.moshi.tiny import MIMI_FILE

    lm = {k: v.to(torch.bfloat16) for k, v in load_file(str(folder / "model.safetensors")).items()}
    return lm, load_file(str(folder / MIMI_FILE))


def test_split_fused_weights_own_their_storage(moshi_tiny_factory) -> None:
    """Every tensor the moshi-layout mapping makes holds its own storage: a slice kept as
    a view of the fused in_proj_weight (v_proj was) keeps q and k of every layer alive
    beside their permuted copies, about 2 GiB for the 7B."""
    folder = moshi_tiny_factory(layout="moshi")
    lm, mimi = _bf16_moshi_layout(folder)
    config = loader.moshi_layout_config(lm, mimi, json.loads((folder / "config.json").read_text()))
    # Held here so their memory cannot be reused while the outputs are compared with it.
    fused = [v for k, v in [*lm.items(), *mimi.items()] if "in_proj" in k]
    assert fused  # the tiny checkpoint has fused projections to split
    spans = [(f.untyped_storage().data_ptr(), f.untyped_storage().nbytes()) for f in fused]
    state = loader.moshi_layout_state(lm, mimi, config)
    assert not [k for k in lm if "self_attn" in k]  # released as mapped
    bigger = {k: (t.untyped_storage().nbytes(), t.nbytes) for k, t in state.items()
              if t.untyped_storage().nbytes() != t.nbytes}
    assert not bigger, f"views into larger tensors: {list(bigger.items())[:3]}"
    shared = [k for k, t in state.items()
              if any(lo <= t.untyped_storage().data_ptr() < lo + n for lo, n in spans)]
    assert not shared, f"still in a fused tensor's storage: {shared[:3]}"


def test_moshi_layout_mimi_keeps_its_float32_weights(moshi_tiny_factory) -> None:
    """A bf16 LM leaves Mimi in float32 straight from the file: casting it to bf16 on
    the way (and .float() after) would drop bits nothing can give back."""
    from safetensors.torch import load_file

    from app.model.moshi.tiny import MIMI_FILE

    folder = moshi_tiny_factory(layout="moshi")
    config = json.loads((folder / "config.json").read_text())
    model = loader._load_moshi_layout(folder, config, Quant.BF16, torch.bfloat16, "cpu")
    assert model.decoder.model.layers[0].mlp.fc1.weight.dtype is torch.bfloat16
    mimi = model.audio_encoder
    original = load_file(str(folder / MIMI_FILE))
    conv = mimi.encoder.encoder_seanet.layers[0].conv.weight
    assert conv.dtype is torch.float32
    assert torch.equal(conv, original["encoder.model.0.conv.conv.weight"])
    codebook = mimi.quantizer.semantic_residual_vector_quantizer.layers[0].codebook.embed_sum
    source = "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum"
    assert torch.equal(codebook, original[source])


def test_transformers_layout_mimi_loads_in_float32(moshi_tiny_factory) -> None:
    """The same for transformers' layout: from_pretrained(dtype=bf16) reads Mimi into
    float32 directly, bit for bit what a float32 load reads."""
    from transformers import MoshiForConditionalGeneration

    folder = moshi_tiny_factory()
    model = loader._load_transformers(folder, Quant.BF16, torch.bfloat16, "cpu")
    reference = MoshiForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    assert next(model.decoder.parameters()).dtype is torch.bfloat16
    got, want = model.audio_encoder.state_dict(), reference.audio_encoder.state_dict()
    assert set(got) == set(want)
    lost = [k for k in want if not torch.equal(got[k], want[k])]
    assert not lost, f"Mimi weights changed by the load: {lost[:3]}"
