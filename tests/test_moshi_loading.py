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
