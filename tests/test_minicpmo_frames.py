"""Frames whose patch grid has a side where the official position ids and transformers'
helper disagree, against OpenBMB's own frame path.

scripts/minicpmo_reference_extra.py frames recorded the official vision tower output
and resampler embeddings of frames that resize to 25x41 and 21x50 patches (sides 25 and
50 are where the official float32 bucketing and the library's helper pick different
position-table cells) and a 32x32 control, in tests/data/minicpmo_goldens/frames.*.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

GOLDENS = Path(__file__).parent / "data" / "minicpmo_goldens"
TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(
    not (GOLDENS / "frames.json").is_file(),
    reason="no frame goldens: scripts/minicpmo_reference_extra.py frames records them")


def test_odd_grids_take_the_official_position_ids_not_the_librarys():
    from transformers.vision_utils import get_vision_nearest_position_ids

    from app.model.minicpm_o.vision import official_position_ids

    for rows, cols in ((25, 41), (21, 50)):
        ours = official_position_ids(rows, cols, 70)
        library = get_vision_nearest_position_ids(torch.tensor([[rows, cols]]), 70).flatten()
        assert not torch.equal(ours, library), (rows, cols)
    assert torch.equal(official_position_ids(32, 32, 70),
                       get_vision_nearest_position_ids(torch.tensor([[32, 32]]), 70).flatten())


def test_frames_with_odd_grids_match_the_official_frame_path():
    from safetensors.torch import load_file

    from app.model.minicpm_o.image import frame_patches
    from tests import minicpmo_inputs as inputs
    from tests.minicpmo_tiny import built_as, tiny_loaded

    record = json.loads((GOLDENS / "frames.json").read_text())
    tensors = load_file(str(GOLDENS / "frames.safetensors"))
    assert built_as(record["checkpoint"]["builder_meta"]), "not the tiny checkpoint recorded on"
    model = tiny_loaded().model
    state = model.state_dict()
    for name in ("vpm.embeddings.position_embedding.weight", "resampler.query"):
        s, s2 = record["weights"][name]
        t = state[name].double()
        assert [float(t.sum()), float(t.pow(2).sum())] == pytest.approx([s, s2], rel=1e-6)
    grids = []
    for key, frame_record in record["frames"].items():
        width, height = (int(v) for v in key.split("x"))
        frame = inputs.frame(0, width, height)
        assert inputs.sha256(frame) == frame_record["sha256"], f"{key}: the input changed"
        patches = frame_patches(frame, scale_resolution=model.config.slice.scale_resolution,
                                patch=model.vpm.patch_size)
        assert list(patches.grid) == frame_record["tgt_size"], key
        grids.append(patches.grid)
        with torch.no_grad():
            hidden = model.vpm(patches.pixels, patches.grid)[0]
        for what, got in (("vpm_hidden", hidden), ("embeds", model.embed_frame(frame))):
            want = tensors[f"{key}.{what}"]
            assert got.shape == want.shape, (key, what)
            diff = float((got - want).abs().max())
            assert diff < TOLERANCE, f"{key} {what}: max difference {diff:.2e}"
    assert (25, 41) in grids and (21, 50) in grids
