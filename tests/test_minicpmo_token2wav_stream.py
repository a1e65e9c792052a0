"""Token2wav streamed end to end (flow + vocoder, 28/25 windows), against the reference.

scripts/minicpmo_hift_reference.py (`stream`) ran minicpmo-utils 1.0.6's own Token2wav on
the tiny flow and vocoder, driven by the official MiniCPMODuplex's own token2wav methods
over a scripted session (four turns: a flushed first unit in each, a turn abandoned
mid-way, ends flushed), and recorded every window's waveform
(tests/data/minicpmo_goldens/token2wav_stream.*). Our Token2Wav, driven the same way,
must give each window within 1e-3.

The seam test needs no reference: every code is voiced exactly once, and around each
seam the streamed mel is the mel of the same codes run in one piece.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.model.minicpm_o.token2wav import stream as stream_module
from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.stream import SILENCE_CODE, Token2Wav
from app.model.minicpm_o.token2wav.tiny_flow import write_tiny_flow
from app.model.minicpm_o.token2wav.tiny_hift import write_tiny_hift

GOLDENS = Path(__file__).parent / "data" / "minicpmo_goldens"
TOLERANCE = 1e-3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sums(path: Path) -> dict[str, list[float]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: [float(v.double().sum()), float(v.double().pow(2).sum())]
            for k, v in sorted(state.items())}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDENS / "token2wav_stream.json").read_text())


@pytest.fixture(scope="module")
def golden_tensors() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "token2wav_stream.safetensors"))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, golden) -> Path:
    """The tiny flow and vocoder the goldens were made on; refused if either changed."""
    folder = tmp_path_factory.mktemp("t2w")
    write_tiny_flow(folder, seed=0)
    write_tiny_hift(folder, seed=0)
    for name in ("flow.pt", "hift.pt"):
        sums, want = _sums(folder / name), golden["weights"][name]
        assert sums.keys() == want.keys(), name
        for key, values in want.items():
            assert sums[key] == pytest.approx(values, rel=1e-9, abs=1e-9), (
                f"the tiny {name}'s {key} is not the one the goldens were made on: remake "
                "them (scripts/minicpmo_hift_reference.py stream)")
    return folder


def _prompt(tensors: dict[str, torch.Tensor]) -> VoicePrompt:
    return VoicePrompt(tokens=tensors["prompt_tokens"], speaker=tensors["prompt_speaker"],
                       mel=tensors["prompt_mel"])


def _spy_windows(token2wav: Token2Wav) -> list[np.ndarray]:
    """Record each window's speech as Token2Wav makes it (the real method still runs)."""
    made: list[np.ndarray] = []
    real = token2wav._run

    def recording(codes, *, last):
        made.append(real(codes, last=last))
        return made[-1]

    token2wav._run = recording
    return made


def test_streamed_session_equals_the_reference_window_by_window(tiny_folder, golden,
                                                                golden_tensors):
    token2wav = Token2Wav.load(tiny_folder, n_timesteps=golden["n_timesteps"],
                               seed=golden["seed"]["torch.manual_seed"])
    token2wav.begin(_prompt(golden_tensors))
    windows = _spy_windows(token2wav)
    codes = golden_tensors["codes"].tolist()
    for step in golden["session"]:
        if step.get("reset"):
            token2wav.reset()
            continue
        start, end = step["codes"]
        first = len(windows)
        out = token2wav.push(codes[start:end], flush=step["force_flush"])
        if step["end_of_turn"]:
            out = np.concatenate([out, token2wav.finish()])
        assert list(range(first, len(windows))) == step["windows"]
        assert out.dtype == np.float32
        assert out.shape[0] == sum(windows[i].shape[0] for i in step["windows"])
        # The official loop left-pads a unit's speech to 1 s unless the turn ends: pacing
        # for its player, not token2wav's output (the unit loop decides playback).
        assert step["unit_samples"] in (out.shape[0], max(out.shape[0], 24000))
    assert len(windows) == len(golden["windows"])
    for i, (ours, want) in enumerate(zip(windows, golden["windows"], strict=True)):
        reference = golden_tensors[f"window{i}"].numpy()
        assert ours.shape == reference.shape == (want["samples"],), f"window {i}"
        error = float(np.abs(ours - reference).max())
        assert error <= TOLERANCE, f"window {i} ({want['codes']} codes): max abs error {error:.2e}"


def test_the_reference_speech_is_loud_enough_for_the_tolerance_to_mean_something(
        golden_tensors):
    wave = golden_tensors["window1"]
    assert wave.std().item() > 0.02


# --- the seam test -----------------------------------------------------------------------


def _seam_check(token2wav: Token2Wav, prompt: VoicePrompt, codes: list[int]) -> list[str]:
    """What is wrong with a streamed turn's seams (empty when nothing is).

    Every code must be voiced exactly once: two mel frames per code (the three lead-in
    silences included) and 480 samples per frame, plus the first chunk's 160 ms of
    silence. And around each seam the streamed mel must be the mel of the same codes run
    in one piece (from the same turn-start cache), up to what chunking changes (a mean
    difference about 0.1 per frame on the tiny flow, against about 1.7 between unrelated
    frames), in the windows before the caches are first cut (after that the two runs see
    different context by design).
    """
    mels: list[torch.Tensor] = []
    real_step = token2wav.vocoder.step

    def recording(mel, *, last):
        mels.append(mel.clone())
        return real_step(mel, last=last)

    token2wav.vocoder.step = recording
    try:
        token2wav.begin(prompt)
        speech = np.concatenate([token2wav.push(codes), token2wav.finish()])
    finally:
        del token2wav.vocoder.step  # the class's own method again
    voiced = len(stream_module.LEAD_IN) + len(codes)
    problems = []
    streamed = torch.cat(mels, dim=2)
    if streamed.shape[2] != 2 * voiced:
        problems.append(f"{streamed.shape[2]} mel frames for {voiced} codes")
    if speech.shape[0] != 3840 + 960 * voiced:
        problems.append(f"{speech.shape[0]} samples for {voiced} codes")
    whole, _ = token2wav.flow.inference_chunk(
        torch.tensor([[SILENCE_CODE] * 3 + codes], dtype=torch.int32), prompt,
        token2wav._turn_start, last=True, n_timesteps=token2wav.n_timesteps)
    compared = min(3 * 2 * stream_module.STRIDE_CODES, streamed.shape[2])  # before any cut
    error = (streamed[..., :compared] - whole[..., :compared]).abs().mean(dim=1)[0]
    frames = torch.nonzero(error > 0.4).flatten().tolist()
    if frames:
        problems.append(f"streamed mel differs from the one-piece mel at frames {frames[:8]}"
                        f" (mean error up to {error.max().item():.2f})")
    return problems


@pytest.fixture(scope="module")
def seam_case(tiny_folder):
    g = torch.Generator().manual_seed(5)
    prompt = VoicePrompt(tokens=torch.randint(0, 6561, (1, 20), generator=g, dtype=torch.int32),
                         speaker=torch.randn(1, 192, generator=g),
                         mel=torch.randn(1, 40, 80, generator=g) * 2 - 5)
    codes = torch.randint(0, 6561, (85,), generator=g).tolist()
    return Token2Wav.load(tiny_folder, n_timesteps=4), prompt, codes


def test_a_streamed_turn_has_no_seam(seam_case):
    token2wav, prompt, codes = seam_case
    assert _seam_check(token2wav, prompt, codes) == []


def test_the_seam_test_fails_when_the_window_is_made_too_short(tiny_folder, seam_case):
    """A window one code short of stride + look-ahead: the flow still keeps 3 codes as
    look-ahead, so each seam drops a code; the check must see it."""
    _, prompt, codes = seam_case
    token2wav = Token2Wav.load(tiny_folder, n_timesteps=4)
    token2wav.window_codes -= 1
    problems = _seam_check(token2wav, prompt, codes)
    assert any("mel frames" in p for p in problems)
    assert any("differs from the one-piece mel" in p for p in problems)


def test_codes_outside_the_vocabulary_are_refused_and_the_buffer_kept(seam_case):
    token2wav, prompt, codes = seam_case
    token2wav.begin(prompt)
    token2wav.push(codes[:10])
    with pytest.raises(ValueError, match=r"speech codes must be in \[0, 6561\); got \[6561\]"):
        token2wav.push([1, 6561])
    assert token2wav._buffer == [SILENCE_CODE] * 3 + codes[:10]


def test_nothing_runs_before_a_voice_is_given(tiny_folder):
    token2wav = Token2Wav.load(tiny_folder, n_timesteps=2)
    with pytest.raises(RuntimeError, match="begin"):
        token2wav.reset()
