"""Conformance with Kyutai's own `moshi` package, through outputs it recorded.

The package cannot be installed beside Duetto's pins (moshi 0.2.13 pins torch < 2.10,
numpy < 2.3, safetensors < 0.8, huggingface-hub < 1.0), so scripts/moshi_reference.py
ran it in an environment of its own on the tiny moshi-format checkpoint (seed 3) and
recorded, in tests/data/moshi_goldens/: the package's greedy LMGen tokens frame by frame
for fixed user codes, and its Mimi's codes and waveform for a fixed input. Here Duetto's
loader reads the same checkpoint (the moshi layout, as Kyutai's and NVIDIA's files are)
and its stepper and Mimi must give the same: same layout mapping, delays, initial
tokens, depth transformer, output alignment and codec.

Where the package is installed, the last two tests also run it live.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.model.contract import ModelSource, Quant
from app.model.moshi import loader, tiny
from app.model.moshi.engine import Sampling, Stepper

GOLDENS = Path(__file__).parent / "data" / "moshi_goldens"
SEED = 3


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDENS / "goldens.json").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory, golden) -> Path:
    """The tiny checkpoint the goldens were recorded on; refused if it is not the same."""
    folder = tiny.build_tiny_moshi_format(tmp_path_factory.mktemp("m") / "m", seed=SEED, dep_q=8)
    for part, path in (("lm", folder / "model.safetensors"), ("mimi", folder / tiny.MIMI_FILE)):
        sums = tiny.tensor_sums(load_file(str(path)))
        want = golden["weights"][part]
        assert sums.keys() == want.keys(), (
            f"the tiny {part} tensors changed: regenerate the goldens with "
            "scripts/moshi_reference.py goldens")
        for name, (s, s2) in want.items():
            assert sums[name] == pytest.approx([s, s2], rel=1e-6, abs=1e-9), (
                f"the tiny {part}'s {name} differs from the one the goldens were recorded "
                "on: regenerate them with scripts/moshi_reference.py goldens")
    return folder


def _loaded(folder: Path) -> loader.Loaded:
    return loader.load(ModelSource(local_dir=folder), Quant.BF16, lambda *_: None, device="cpu")


def test_greedy_steps_match_kyutai_lmgen(folder: Path, golden: dict) -> None:
    loaded = _loaded(folder)
    assert loaded.layout == "moshi"
    record = golden["lmgen"]
    stepper = Stepper(loaded.model, loaded.delays, Sampling(temp_text=0, temp_audio=0))
    compared = 0
    for user, want in zip(record["user_codes"], record["tokens"], strict=True):
        mine = stepper.step(torch.tensor(user))
        assert (want is None) == (mine is None)
        if want is not None:
            assert [mine.text, *mine.codes.tolist()] == want, f"frame {compared + 1}"
            compared += 1
    assert compared == len(record["tokens"]) - 1 == 15


def test_mimi_matches_kyutai_mimi(folder: Path) -> None:
    ref = load_file(str(GOLDENS / "mimi.safetensors"))
    mimi = _loaded(folder).model.audio_encoder
    with torch.no_grad():
        codes = mimi.encode(ref["audio"], num_quantizers=8).audio_codes
        assert torch.equal(codes, ref["codes"])
        decoded = mimi.decode(ref["codes"]).audio_values
    assert decoded.shape == ref["decoded"].shape
    assert torch.allclose(decoded, ref["decoded"], atol=1e-5)


# --- live, where Kyutai's package is installed (not a dependency) -------------------------


def test_live_greedy_steps_match_kyutai_lmgen(tmp_path: Path) -> None:
    lm_module = pytest.importorskip("moshi.models.lm",
                                    reason="Kyutai's moshi package is not installed")
    from moshi_reference_models import kyutai_lm

    folder = tiny.build_tiny_moshi_format(tmp_path / "m", seed=SEED, dep_q=8)
    lm = kyutai_lm(lm_module, folder, load_file(str(folder / "model.safetensors")))
    generator = lm_module.LMGen(lm, use_sampling=False)
    stepper = Stepper(tiny._tiny_model(SEED), tiny.STANDARD_DELAYS,
                      Sampling(temp_text=0, temp_audio=0))
    gen = torch.Generator().manual_seed(0)
    compared = 0
    with generator.streaming(1):
        for _ in range(16):
            user = torch.randint(0, tiny.TINY_CARD, (8,), generator=gen)
            ref = generator.step(user.view(1, 8, 1))
            mine = stepper.step(user)
            assert (ref is None) == (mine is None)
            if ref is not None:
                assert ref[0, :, 0].tolist() == [mine.text, *mine.codes.tolist()]
                compared += 1
    assert compared == 15


def test_live_mimi_matches_kyutai_mimi(tmp_path: Path) -> None:
    pytest.importorskip("moshi.models.compression",
                        reason="Kyutai's moshi package is not installed")
    from moshi_reference_models import kyutai_mimi

    folder = tiny.build_tiny_moshi_format(tmp_path / "m", seed=SEED)
    kyutai = kyutai_mimi(load_file(str(folder / tiny.MIMI_FILE)))
    ours = tiny._tiny_model(SEED).audio_encoder
    audio = 0.1 * torch.randn(1, 1, 1920 * 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codes = kyutai.encode(audio)
        assert torch.equal(codes, ours.encode(audio, num_quantizers=8).audio_codes)
        assert torch.allclose(kyutai.decode(codes), ours.decode(codes).audio_values, atol=1e-5)
