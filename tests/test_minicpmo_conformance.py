"""Conformance with OpenBMB's own MiniCPM-o 4.5 code, through outputs it recorded.

The official code (OpenBMB/MiniCPM-o-Demo, MiniCPMO45/) pins transformers 4.51 and
torch <= 2.8, so scripts/minicpmo_reference.py ran it in an environment of its own on
the tiny checkpoint (app/model/minicpm_o/tiny.py) and recorded, in
tests/data/minicpmo_goldens/: vision embeddings of 448 px and 640x480 frames, the
streaming mel and audio embeddings of a 5-unit duplex session unit by unit, the system
prompt's reference-voice embeddings, and the LLM's logits at each unit's decision point
with the token ids it fed. Duetto's port must give the same within 1e-4 on the same
weights and inputs (tests/minicpmo_inputs.py), with the official token sequence fed.
The token sequence of the session itself (Duetto's unit protocol) is tested where the
protocol lives.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

GOLDENS = Path(__file__).parent / "data" / "minicpmo_goldens"
TOL = 1e-4

pytestmark = pytest.mark.skipif(
    not (GOLDENS / "goldens.json").is_file(),
    reason="no goldens yet: scripts/minicpmo_reference.py goldens records them")


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDENS / "goldens.json").read_text())


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(GOLDENS / "goldens.safetensors"))


@pytest.fixture(scope="module")
def inputs():
    return importlib.import_module("tests.minicpmo_inputs")


@pytest.fixture(scope="module")
def model(tmp_path_factory, golden):
    """The tiny checkpoint the goldens were recorded on, loaded by Duetto; refused if its
    weights are not those (per-tensor sums)."""
    from app.model.minicpm_o.loader import load_minicpmo, read_index, read_shards
    from app.model.minicpm_o.tiny import build_tiny
    from tests.minicpmo_tiny import tiny_folder

    seed = int((golden["checkpoint"].get("builder_meta") or {}).get("seed", 0))
    folder = tiny_folder() if seed == 0 else build_tiny(tmp_path_factory.mktemp("m") / "m",
                                                        seed=seed)
    state = read_shards(folder, read_index(folder))
    want = golden["weights"]
    assert sorted(state) == sorted(want), (
        "the tiny checkpoint's tensors changed: regenerate the goldens with "
        "scripts/minicpmo_reference.py goldens")
    for name, (s, s2) in want.items():
        t = state[name].double()
        assert [float(t.sum()), float(t.pow(2).sum())] == pytest.approx([s, s2], rel=1e-6,
                                                                         abs=1e-9), (
            f"the tiny checkpoint's {name} is not the one the goldens were recorded on: "
            "regenerate them with scripts/minicpmo_reference.py goldens")
    return load_minicpmo(folder).model


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = float((got.float() - want.float()).abs().max())
    assert diff <= TOL, f"{what}: max |ours - official| = {diff:.3g} > {TOL}"


def _frame_size(key: str) -> tuple[int, int]:
    w, _, h = key.partition("x")
    return int(w), int(h or w)


def test_vision_embeddings_of_a_frame_match_the_official(model, golden, tensors, inputs):
    from app.model.minicpm_o.image import frame_patches

    assert "448" in golden["vision"]
    for key, record in golden["vision"].items():
        width, height = _frame_size(key)
        frame = inputs.frame(0, width, height)
        assert inputs.sha256(frame) == record["sha256"], f"{key}: the input frame changed"
        patches = frame_patches(frame, scale_resolution=model.config.slice.scale_resolution,
                                patch=model.vpm.patch_size)
        assert list(patches.grid) == record["tgt_size"]
        with torch.no_grad():
            hidden = model.vpm(patches.pixels, patches.grid)[0]
        _close(hidden, tensors[f"vision.{key}.vpm_hidden"], f"{key} vision tower")
        _close(model.embed_frame(frame), tensors[f"vision.{key}.embeds"], f"{key} embeddings")


def test_audio_streamed_unit_by_unit_matches_the_official_streaming_path(
        model, golden, tensors, inputs):
    stream = model.new_audio_stream()
    units = golden["session"]["units"]
    for record in units:
        k = record["unit"]
        pcm, _frame = inputs.session_unit(k)
        assert inputs.sha256(pcm) == record["audio_sha256"], f"unit {k}: the input changed"
        out = stream.feed(pcm)
        _close(stream.last_mel, tensors[f"unit{k}.mel"], f"unit {k} mel")
        assert out.shape[0] == 10
        _close(out, tensors[f"unit{k}.audio_embeds"], f"unit {k} audio embeddings")
    assert len(units) == 5


def test_reference_voice_embeddings_match_the_official(model, golden, tensors, inputs):
    record = golden["session"]["prefix"]["ref_audio"]
    clip = inputs.ref_audio()
    assert inputs.sha256(clip) == record["sha256"]
    _close(model.embed_reference_audio(clip), tensors[record["tensor"]], "reference voice")


class _Feeder:
    """Feeds the LLM the way the official StreamDecoder does: piece by piece, positions
    continuing from the cache."""

    def __init__(self, llm) -> None:
        from transformers import DynamicCache

        self.llm = llm
        self.cache = DynamicCache()
        self.length = 0
        self.table = llm.get_input_embeddings()

    def ids(self, ids: list[int]) -> torch.Tensor:
        return self.table(torch.tensor(ids))

    @torch.no_grad()
    def feed(self, embeds: torch.Tensor) -> torch.Tensor:
        n = embeds.shape[0]
        positions = torch.arange(self.length, self.length + n).unsqueeze(0)
        out = self.llm(inputs_embeds=embeds.unsqueeze(0), position_ids=positions,
                       cache=self.cache, use_cache=True)
        self.length += n
        return out.logits[0, -1]


def test_llm_logits_at_each_decision_point_match_the_official(model, golden, tensors, inputs):
    """The official session's exact inputs fed to our LLM: the logits it decides each
    unit's first token from must be the official ones."""
    from app.model.minicpm_o.tiny import special_ids

    ids = special_ids()
    session = golden["session"]
    prefix = session["prefix"]
    feeder = _Feeder(model.llm)
    for token in prefix["prefix_ids"]:
        feeder.feed(feeder.ids([token]))
    feeder.feed(model.embed_reference_audio(inputs.ref_audio()))
    for token in prefix["suffix_ids"]:
        feeder.feed(feeder.ids([token]))
    assert feeder.length == prefix["cache_length"]
    stream = model.new_audio_stream()
    compared_full = False
    for record in session["units"]:
        k = record["unit"]
        pcm, frame = inputs.session_unit(k)
        logits = None
        for item in record["prefill"]:
            if isinstance(item, int):
                piece = feeder.ids([item])
            elif item[0] == "img":
                piece = model.embed_frame(frame)
            else:
                piece = stream.feed(pcm)
            assert piece.shape[0] == (1 if isinstance(item, int) else item[1])
            logits = feeder.feed(piece)
        for name, value in record["decision_logits"]["special"].items():
            got = float(logits[ids[name]])
            assert abs(got - value) <= TOL, f"unit {k}: {name} logit {got} != {value}"
        top = record["decision_logits"]["top"]
        _close(logits[top["ids"]], torch.tensor(top["values"]), f"unit {k} top logits")
        if f"unit{k}.logits" in tensors:
            _close(logits, tensors[f"unit{k}.logits"], f"unit {k} logits")
            compared_full = True
        for token in record["generated_ids"]:
            feeder.feed(feeder.ids([token]))
        assert feeder.length == record["cache_length_after"], f"unit {k}: fed length"
    assert compared_full
