"""Conformance with OpenBMB's own MiniCPM-o 4.5 code, through outputs it recorded.

The official code is pinned to transformers 4.51 and torch <= 2.8, so
scripts/minicpmo_reference.py ran it in an environment of its own on the tiny checkpoint
(app/model/minicpm_o/tiny.py) and recorded, in tests/data/minicpmo_goldens/: the
resampler's embeddings of generated frames, the audio embeddings of 5 s of generated
audio streamed unit by unit through the official streaming path (the 1035 ms first unit,
the 2-frame CNN context, the Whisper KV cache, the mel normalisation that changes once 5 s
are buffered), and a scripted 5-unit greedy duplex session (MiniCPMODuplex with its
StreamDecoder): the LLM's logits at each unit's decision point and every token it fed;
also the vision tower's output, each unit's streaming mel and the system prompt's
reference-voice embeddings (the official offline audio path).
goldens.json names the inputs (tests/minicpmo_inputs.py), the official commit, what was
replaced to run it on a CPU, and the per-tensor sums of the weights.

Here Duetto's port reads the same checkpoint and must give the same within 1e-4, and
Duetto's own unit loop (app/model/minicpm_o/duplex.py), run greedily over the same
inputs, must choose the official token sequence (the last section).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.model.minicpm_o.tiny import build_tiny
from tests import minicpmo_inputs as inputs
from tests.minicpmo_tiny import built_as, tiny_loaded

GOLDENS = Path(__file__).parent / "data" / "minicpmo_goldens"
TOLERANCE = 1e-4
FRAMES = {"448": (448, 448), "640x480": (640, 480)}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDENS / "goldens.json").read_text())


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "goldens.safetensors"))


def _sums(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {name: [float(t.double().sum()), float(t.double().pow(2).sum())]
            for name, t in sorted(state.items())}


@pytest.fixture(scope="module")
def loaded(golden):
    """The tiny checkpoint the goldens were recorded on; refused if it is not the same."""
    meta = golden["checkpoint"]["builder_meta"]
    assert built_as(meta), (
        "the shared tiny checkpoint is not built as the goldens' was "
        f"({meta}): build one with those arguments here")
    loaded = tiny_loaded()
    got = _sums({k: v for k, v in loaded.model.state_dict().items() if k in golden["weights"]})
    want = golden["weights"]
    assert got.keys() == want.keys(), (
        "the tiny tensors changed: regenerate the goldens with "
        "scripts/minicpmo_reference.py goldens")
    for name, (s, s2) in want.items():
        assert got[name] == pytest.approx([s, s2], rel=1e-6, abs=1e-9), (
            f"the tiny {name} differs from the one the goldens were recorded on: "
            "regenerate them with scripts/minicpmo_reference.py goldens")
    return loaded


def _max_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    assert tuple(got.shape) == tuple(want.shape), (
        f"shape {tuple(got.shape)}, want {tuple(want.shape)}")
    return float((got.float() - want.float()).abs().max())


# --- the inputs ----------------------------------------------------------------------------


def test_the_generated_inputs_are_the_bytes_the_goldens_were_recorded_on(golden):
    for key, (w, h) in FRAMES.items():
        assert inputs.sha256(inputs.frame(0, w, h)) == golden["vision"][key]["sha256"]
    for unit in golden["session"]["units"]:
        pcm, frame = inputs.session_unit(unit["unit"])
        assert inputs.sha256(pcm) == unit["audio_sha256"]
        assert (frame is None) == (unit["frame"] is None)
    assert inputs.sha256(inputs.ref_audio()) == golden["session"]["prefix"]["ref_audio"]["sha256"]


def test_the_goldens_were_recorded_on_the_tiny_builders_weights(golden, tmp_path):
    """Also without the shared fixture: the builder, given the recorded arguments, makes
    the very tensors (sum and sum of squares each) the official code ran on."""
    meta = golden["checkpoint"]["builder_meta"]
    folder = build_tiny(tmp_path / "t", seed=meta["seed"],
                        min_answer_tokens=meta["min_answer_tokens"])
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(load_file(str(folder / shard)))
    sums = _sums(state)
    assert sums.keys() == golden["weights"].keys()
    for name, want in golden["weights"].items():
        assert sums[name] == pytest.approx(want, rel=1e-6, abs=1e-9), name


def test_the_tokenizer_gives_the_official_prefix_ids(golden, loaded):
    prefix = golden["session"]["prefix"]
    tok = loaded.tokenizer
    assert tok.encode(inputs.PREFIX_SYSTEM_PROMPT, add_special_tokens=False) == prefix["prefix_ids"]
    assert tok.encode(inputs.SUFFIX_SYSTEM_PROMPT, add_special_tokens=False) == prefix["suffix_ids"]


# --- vision and audio --------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(FRAMES))
def test_frame_embeddings_equal_the_official_resampler_output(golden, tensors, loaded, key):
    from app.model.minicpm_o.image import frame_patches

    w, h = FRAMES[key]
    model = loaded.model
    patches = frame_patches(inputs.frame(0, w, h), patch=model.vpm.patch_size,
                            scale_resolution=model.config.slice.scale_resolution)
    assert list(patches.grid) == golden["vision"][key]["tgt_size"]
    with torch.no_grad():
        hidden = model.vpm(patches.pixels, patches.grid)[0]
    assert _max_diff(hidden, tensors[f"vision.{key}.vpm_hidden"]) < TOLERANCE, "vision tower"
    got = loaded.model.embed_frame(inputs.frame(0, w, h))
    assert got.shape == (64, loaded.model.config.llm_hidden)
    assert _max_diff(got, tensors[f"vision.{key}.embeds"]) < TOLERANCE


def test_audio_streamed_unit_by_unit_equals_the_official_streaming_path(golden, tensors, loaded):
    stream = loaded.model.new_audio_stream()
    for unit in golden["session"]["units"]:
        k = unit["unit"]
        got = stream.feed(inputs.session_unit(k)[0])
        assert got.shape[0] == 10, f"unit {k}: {got.shape[0]} audio embeddings, want 10"
        mel = _max_diff(stream.last_mel, tensors[f"unit{k}.mel"])
        assert mel < TOLERANCE, f"unit {k}: mel max difference {mel:.2e}"
        diff = _max_diff(got, tensors[f"unit{k}.audio_embeds"])
        assert diff < TOLERANCE, f"unit {k}: max difference {diff:.2e}"


def test_reference_voice_embeddings_equal_the_official_offline_path(golden, tensors, loaded):
    record = golden["session"]["prefix"]["ref_audio"]
    got = loaded.model.embed_reference_audio(inputs.ref_audio())
    diff = _max_diff(got, tensors[record["tensor"]])
    assert diff < TOLERANCE, f"reference voice: max difference {diff:.2e}"


# --- the LLM over the official session's token stream ----------------------------------------


def _session_stream(golden, tensors, loaded) -> tuple[torch.Tensor, list[int]]:
    """The embeddings the official session fed its LLM, in order, all made by Duetto's
    port (tokens, reference voice, frames, audio); and the index of each unit's decision
    point (the last position its prefill fed)."""
    model = loaded.model
    table = model.llm.get_input_embeddings()
    session = golden["session"]

    def ids(values: list[int]) -> torch.Tensor:
        return table(torch.tensor(values, dtype=torch.long))

    pieces = [ids(session["prefix"]["prefix_ids"]),
              model.embed_reference_audio(inputs.ref_audio()),
              ids(session["prefix"]["suffix_ids"])]
    audio = model.new_audio_stream()
    decisions, length = [], sum(p.shape[0] for p in pieces)
    for unit in session["units"]:
        pcm, frame = inputs.session_unit(unit["unit"])
        for item in unit["prefill"]:
            if isinstance(item, int):
                piece = ids([item])
            elif item[0] == "img":
                piece = model.embed_frame(frame)
            else:
                piece = audio.feed(pcm)
            assert isinstance(item, int) or piece.shape[0] == item[1], item
            pieces.append(piece)
            length += piece.shape[0]
        decisions.append(length - 1)
        pieces.append(ids(unit["generated_ids"]))
        length += len(unit["generated_ids"])
    return torch.cat([p.to(table.weight.dtype) for p in pieces]), decisions


def test_llm_logits_at_each_decision_point_equal_the_official_session(golden, tensors, loaded):
    stream, decisions = _session_stream(golden, tensors, loaded)
    with torch.no_grad():
        logits = loaded.model.llm(inputs_embeds=stream[None]).logits[0]
    full = golden["session"]["full_logits"]
    for unit, at in zip(golden["session"]["units"], decisions, strict=True):
        k, row = unit["unit"], logits[at]
        want = unit["decision_logits"]
        top = want["top"]
        assert _max_diff(row[top["ids"]], torch.tensor(top["values"])) < TOLERANCE, f"unit {k}"
        assert row.argmax().item() == top["ids"][0], f"unit {k}"
        tok = loaded.tokenizer
        for name, value in want["special"].items():
            got = float(row[tok.convert_tokens_to_ids(name)])
            assert abs(got - value) < TOLERANCE, f"unit {k} {name}: {got} vs {value}"
        if full == f"unit{k}.logits":
            assert _max_diff(row, tensors[full]) < TOLERANCE, f"unit {k} (all logits)"
    assert np.isfinite(logits.numpy()).all()


# --- the unit loop: the scripted session's token sequence -------------------------------


class _OfficialSteer:
    """The steered golden session's biases (minicpmo_inputs.steer), as the backend's
    steer: added to the raw logits the decode is given, as the reference run added them."""

    def steer(self, ids, tokenizer):
        def bias(unit: int, j: int, turn_open: bool) -> dict[int, float]:
            return {tokenizer.convert_tokens_to_ids(name): value
                    for name, value in inputs.steer(unit, j).items()}

        return bias


@pytest.mark.parametrize("which", ["session", "steered_session"])
def test_a_scripted_greedy_session_chooses_the_official_token_sequence(
        golden, loaded, tmp_path, which):
    """Duetto's backend, greedy, over the official session's inputs (the persona's
    reference voice as a file, a frame in units 0-2, 1 s of audio each): every unit's
    tokens after its prefill and the cache length after it are the official ones.

    The plain session is the random model's own choices (a forced listen, then words to
    the token limit); the steered one walks every branch of the unit loop: its own
    <|listen|>, <|listen|> in an open turn becoming <|tts_bos|>, <|turn_eos|> then
    <|listen|>, its own <|chunk_eos|>, a turn going on into the next unit."""
    import soundfile

    from app.model.contract import Control, Persona, Unit, VideoFrame, Voice
    from app.model.minicpm_o.backend import MiniCPMOBackend
    from app.model.minicpm_o.duplex import Sampling

    session = golden[which]
    voice = tmp_path / "voice.wav"
    soundfile.write(voice, inputs.ref_audio(), inputs.SAMPLE_RATE, subtype="FLOAT")
    backend = MiniCPMOBackend(sampling=Sampling(
        greedy=True, force_listen_count=inputs.FORCE_LISTEN_COUNT,
        max_unit_tokens=inputs.MAX_NEW_SPEAK_TOKENS_PER_CHUNK))
    backend.attach(loaded, _OfficialSteer() if which == "steered_session" else None)
    # The official system text is the persona's role text after the omni header.
    backend.start(Persona("golden", "", voice=Voice(reference_audio=voice)))
    assert backend.decoder.cache_length == golden["session"]["prefix"]["cache_length"]
    sequence: list[int] = []
    for record in session["units"]:
        k = record["unit"]
        pcm, frame = inputs.session_unit(k)
        frames = () if frame is None else (VideoFrame(frame, float(k), k),)
        list(backend.step(Unit(k, float(k), 1.0, inputs.SAMPLE_RATE, pcm, frames), Control()))
        result = backend.results[-1]
        assert list(result.tokens) == record["generated_ids"], f"unit {k}"
        assert backend.decoder.cache_length == record["cache_length_after"], f"unit {k}"
        sequence += result.tokens
    # The official session's whole record of what it chose and fed after the prefills.
    assert sequence == session["total_ids"]
