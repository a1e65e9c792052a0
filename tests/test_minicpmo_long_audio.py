"""The streaming audio path over 32 units against OpenBMB's own, past its two late events.

scripts/minicpmo_reference_extra.py long-audio ran the official duplex loop's audio path for 32 s
on the tiny checkpoint and recorded each unit's embeddings (and some units' mel) and the
official Whisper cache length after each unit, in tests/data/minicpmo_goldens/long_audio.*.
After 29 units (1450 encoder frames) the official code drops the Whisper cache rather
than overrun its 1500 positions, and its mel buffer, grown to 30 s, slides by 10 s; the
port must do both where the official code does and give the same embeddings within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

GOLDENS = Path(__file__).parent / "data" / "minicpmo_goldens"
TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(
    not (GOLDENS / "long_audio.json").is_file(),
    reason="no long-audio goldens: scripts/minicpmo_reference_extra.py long-audio records them")


def _max_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    assert tuple(got.shape) == tuple(want.shape), f"{tuple(got.shape)} != {tuple(want.shape)}"
    return float((got.float() - want.float()).abs().max())


def test_32_units_stream_as_the_official_path_through_the_cache_reset_and_the_slide():
    from safetensors.torch import load_file

    from tests import minicpmo_inputs as inputs
    from tests.minicpmo_tiny import built_as, tiny_loaded

    record = json.loads((GOLDENS / "long_audio.json").read_text())
    tensors = load_file(str(GOLDENS / "long_audio.safetensors"))
    assert built_as(record["checkpoint"]["builder_meta"]), "not the tiny checkpoint recorded on"
    state = tiny_loaded().model.state_dict()
    for name, (s, s2) in record["weights"].items():
        t = state[name].double()
        assert [float(t.sum()), float(t.pow(2).sum())] == pytest.approx(
            [s, s2], rel=1e-6, abs=1e-9), (
            f"{name} is not the tensor the goldens were recorded on: regenerate them")

    stream = tiny_loaded().model.new_audio_stream()
    audio = inputs.audio(len(record["units"]))
    cache, base = [], []
    for unit in record["units"]:
        k = unit["unit"]
        pcm = audio[k * inputs.UNIT_SAMPLES:(k + 1) * inputs.UNIT_SAMPLES]
        assert inputs.sha256(pcm) == unit["audio_sha256"], f"unit {k}: the input changed"
        got = stream.feed(pcm)
        if f"unit{k}.mel" in tensors:
            diff = _max_diff(stream.last_mel, tensors[f"unit{k}.mel"])
            assert diff < TOLERANCE, f"unit {k}: mel differs by {diff:.2e}"
        diff = _max_diff(got, tensors[f"unit{k}.audio_embeds"])
        assert diff < TOLERANCE, f"unit {k}: embeddings differ by {diff:.2e}"
        cache.append(len(stream.cache))
        base.append(stream.mel.base)
    assert cache == [u["whisper_cache_after"] for u in record["units"]]
    assert base == [u["mel_info"]["base_T"] for u in record["units"]]
    # The late events are in the recording: the reset and the slide at unit 29.
    assert cache[28:30] == [1450, 50] and base[28:30] == [0, 1000]
