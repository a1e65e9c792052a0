"""A tiny HiFT vocoder file for tests and benchmarks: `write_tiny_hift(folder, seed)`.

Only the widths shrink (16 channels at the first stage instead of 512, 16 in the F0
predictor): the upsampling rates 8 x 5 x 3, the kernels, the iSTFT (n_fft 16, hop 4), so
the hop of 480 samples per frame, and the 8 harmonics are the published ones, and so
are the stream's cache lengths, which follow from them. The file is written as the
published one is: a torch pickle of tensors only, every name prefixed `generator.`.

Random weights are scaled so the tiny vocoder makes audible, varied output rather than
near-silence: F0 swings across the voiced threshold (both source branches run), the
iSTFT magnitudes sit around exp(-0.3), and Snake's α stays away from zero. A parity test
on a vocoder that outputs zeros would prove nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from app.model.building import building
from app.model.minicpm_o.token2wav.hift import CHECKPOINT_PREFIX, HiFTConfig, HiFTGenerator

TINY_HIFT = HiFTConfig(base_channels=16, f0_channels=16)
HIFT_FILE = "hift.pt"


def tiny_hift_state(seed: int) -> dict[str, torch.Tensor]:
    """The tiny vocoder's tensors, named as our module names them."""
    gen = torch.Generator().manual_seed(seed)
    with building(torch.float32):
        model = HiFTGenerator(TINY_HIFT)
    state = {}
    for name, tensor in model.state_dict().items():
        state[name] = _value(name, tuple(tensor.shape), gen)
    _calibrate_f0(model, state, gen)
    return state


def _calibrate_f0(model: HiFTGenerator, state: dict[str, torch.Tensor],
                  gen: torch.Generator) -> None:
    """Set the F0 read-out so that, on log-mel-like input (each bin drifting around -5,
    as the tests give it), F0 spreads about 120 Hz either side of 40 Hz:
    |F0| then crosses the 10 Hz voiced threshold now and then, and both the voiced
    (sines) and the unvoiced (noise) source run. Random read-out weights alone give an F0
    that barely moves, always voiced."""
    model.load_state_dict(state)
    steps = torch.randn(1, TINY_HIFT.mel_bins, 400, generator=gen) * 0.5
    mel = torch.empty_like(steps)
    level = torch.zeros(1, TINY_HIFT.mel_bins)
    for t in range(steps.shape[2]):  # each bin drifts and is pulled back to -5
        level = 0.9 * level + steps[:, :, t]
        mel[:, :, t] = level - 5
    with torch.no_grad():
        features = model.f0_predictor.condnet(mel).transpose(1, 2)[0]  # [frames, channels]
        raw = features @ state["f0_predictor.classifier.weight"][0]
        scale = 120.0 / raw.std()
        state["f0_predictor.classifier.weight"] = state["f0_predictor.classifier.weight"] * scale
        state["f0_predictor.classifier.bias"] = (40.0 - raw.mean() * scale).reshape(1)


def _value(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    def normal(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=gen)

    if name.endswith(".alpha"):
        return uniform(0.5, 1.5)
    if name == "conv_post.bias":
        bias = normal(0.3)
        bias[: TINY_HIFT.n_fft // 2 + 1] -= 0.3  # magnitudes about exp(-0.3)
        return bias
    if name.endswith("original0"):  # weight norm's g: each output channel's weight norm
        return uniform(0.5, 1.0)
    if name.endswith(".bias"):
        return normal(0.05)
    if name.endswith("original1"):  # weight norm's v: its direction only counts
        return normal(1.0)
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    return normal(fan_in ** -0.5)  # plain weights keep their input's scale


def write_tiny_hift(folder: Path, seed: int = 0) -> Path:
    """Write `hift.pt` (tiny widths, published structure) into `folder`; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / HIFT_FILE
    state = {CHECKPOINT_PREFIX + k: v.contiguous() for k, v in tiny_hift_state(seed).items()}
    torch.save(state, path)
    return path
