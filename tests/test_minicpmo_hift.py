"""MiniCPM-o's HiFT vocoder and its chunk stream, against minicpmo-utils 1.0.6.

The reference package cannot run in Duetto's environment (it pins old transformers and
onnxruntime and hard-codes CUDA), so scripts/minicpmo_hift_reference.py ran it in a
throwaway environment and recorded: the full-size tree's names and shapes
(tests/data/keylists/minicpm-o-4.5-hift.json.gz) and its own `Token2wav.stream`'s output
over given mel chunks on the tiny vocoder (tests/data/minicpmo_goldens/hift_stream.*),
three turns, each from the turn-start cache.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.model.minicpm_o.token2wav.hift import (
    HiFTConfig,
    HiFTGenerator,
    load_hift,
    read_hift_state,
)
from app.model.minicpm_o.token2wav.tiny_hift import tiny_hift_state, write_tiny_hift
from app.model.minicpm_o.token2wav.vocoder_stream import VocoderStream

DATA = Path(__file__).parent / "data"
GOLDENS = DATA / "minicpmo_goldens"
TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _key_list() -> dict[str, tuple[int, ...]]:
    record = json.loads(gzip.decompress((DATA / "keylists" / "minicpm-o-4.5-hift.json.gz")
                                        .read_bytes()))
    return {k: tuple(v) for k, v in record["files"]["hift.pt"]["tensors"].items()}


def test_full_size_tree_is_the_published_files_name_for_name_and_shape_for_shape():
    with torch.device("meta"):
        model = HiFTGenerator()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = _key_list()
    assert sorted(ours.keys() - want.keys()) == []
    assert sorted(want.keys() - ours.keys()) == []
    assert {k: v for k, v in ours.items() if want[k] != v} == {}
    assert sum(int(np.prod(s)) for s in ours.values()) == 20_821_295
    assert HiFTConfig().hop == 480


def test_config_read_from_the_shapes_of_the_published_tree():
    assert HiFTConfig.from_shapes(_key_list()) == HiFTConfig()


def test_a_file_that_is_not_the_vocoder_is_refused_naming_what_differs(tmp_path):
    path = write_tiny_hift(tmp_path)
    state = torch.load(path, weights_only=True)
    del state["generator.conv_post.bias"]
    state["generator.conv_pre.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"1 missing \(first: conv_post.bias\).*"
                                         r"conv_pre.bias \(5,\) instead of \(16,\)"):
        load_hift(tmp_path / "bad.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a vocoder's tensors"):
        load_hift(tmp_path / "list.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot read the vocoder weights"):
        read_hift_state(tmp_path / "broken.pt")


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDENS / "hift_stream.json").read_text())


@pytest.fixture(scope="module")
def golden_tensors() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "hift_stream.safetensors"))


@pytest.fixture(scope="module")
def tiny_hift(tmp_path_factory, golden):
    """The tiny vocoder the goldens were made on; refused if the builder changed."""
    state = tiny_hift_state(seed=0)
    sums = {k: [float(v.double().sum()), float(v.double().pow(2).sum())]
            for k, v in state.items()}
    want = {k.removeprefix("generator."): v for k, v in golden["weights"].items()}
    assert sums.keys() == want.keys()
    for name, (total, squares) in want.items():
        assert sums[name] == pytest.approx([total, squares], rel=1e-9, abs=1e-9), (
            f"the tiny vocoder's {name} is not the one the goldens were made on: "
            "remake them (scripts/minicpmo_hift_reference.py vocoder)")
    return load_hift(write_tiny_hift(tmp_path_factory.mktemp("hift"), seed=0))


def test_the_inputs_exercise_both_source_branches_and_the_output_is_speech_loud(
        tiny_hift, golden_tensors):
    f0 = tiny_hift.f0_predictor(golden_tensors["mel"])
    voiced = (f0 > tiny_hift.config.voiced_threshold).float().mean().item()
    assert 0.02 < voiced < 0.98
    wave = golden_tensors["turn0.chunk1"]
    assert wave.std().item() > 0.01
    assert wave.abs().max().item() < 0.99


def test_streamed_chunks_equal_the_reference_chunk_by_chunk(tiny_hift, golden,
                                                            golden_tensors):
    mel = golden_tensors["mel"]
    stream = VocoderStream(tiny_hift, torch.Generator().manual_seed(golden["seed"]
                                                                    ["torch.manual_seed"]))
    start, calls = 0, iter(golden["calls"])
    for turn in golden["turns"]:
        stream.reset()  # the turn-start cache
        for frames in turn:
            call = next(calls)
            wave = stream.step(mel[:, :, start:start + frames], last=call["last"])
            start += frames
            want = golden_tensors[call["name"]]
            assert wave.shape == want.shape, call["name"]
            error = (wave - want).abs().max().item()
            assert error <= TOLERANCE, f"{call['name']}: max abs error {error:.2e}"


def test_a_chunk_that_is_not_last_is_its_own_frames_long(tiny_hift):
    stream = VocoderStream(tiny_hift, torch.Generator().manual_seed(0))
    mel = torch.randn(1, 80, 50) - 5
    first = stream.step(mel, last=False)
    assert first.shape == (50 * 480,)
    assert first[:3840].abs().max().item() == 0.0  # the first chunk's silence
    assert stream.step(mel, last=False).shape == (50 * 480,)
    assert stream.step(mel[:, :, :10], last=True).shape == ((8 + 10) * 480,)
