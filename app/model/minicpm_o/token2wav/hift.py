"""The HiFT vocoder: 50 mel frames a second in, 24 kHz speech out (hop 480).

HiFT (a neural source filter in front of an iSTFT HiFi-GAN): a small convolution stack
predicts F0 from the mel; F0 drives a harmonic sine source (fundamental plus 8 overtones,
noise where unvoiced) at the output rate; the mel is upsampled 8 x 5 x 3 by transposed
convolutions with Snake residual blocks, the source's STFT is mixed in at each scale, and
the last layer's 18 channels are the magnitude (9 bins, exp) and phase (9 bins, sin) of an
inverse STFT with n_fft 16 and hop 4: 120 x 4 = 480 samples per mel frame.

Module and parameter names are those of the published `hift.pt` once its `generator.`
prefix is stripped (the weights are stored as torch weight-norm parametrizations:
`parametrizations.weight.original0` is g, `original1` is v), so the file loads strictly.
The published file ships no configuration: the published sizes are the defaults below,
and `HiFTConfig.from_shapes` reads the two widths a smaller test checkpoint may change.

The source draws random numbers (each harmonic's starting phase, additive noise) from a
`torch.Generator` the caller owns, in the reference's order and sizes, so that a seeded
run is reproducible and equals the reference seeded alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from app.model.building import building
from app.model.minicpm_o.token2wav.state_check import state_differences

# The published file names every tensor with this prefix (its training wrapper's name for
# the generator beside the discriminator).
CHECKPOINT_PREFIX = "generator."


@dataclass(frozen=True)
class HiFTConfig:
    """The published vocoder's sizes (none of them is stored beside the weights)."""

    mel_bins: int = 80
    base_channels: int = 512
    f0_channels: int = 512
    harmonics: int = 8  # overtones above the fundamental
    sample_rate: int = 24000
    sine_amp: float = 0.1
    noise_std: float = 0.003
    voiced_threshold: float = 10.0  # Hz: F0 at or below is unvoiced
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernels: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    istft_hop: int = 4
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernels: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99

    @property
    def hop(self) -> int:
        """Output samples per mel frame (480: 24 kHz from 50 frames a second)."""
        return math.prod(self.upsample_rates) * self.istft_hop

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> HiFTConfig:
        """The published structure with the widths a checkpoint's tensors show.

        Only the widths vary (a tiny test checkpoint shrinks them); rates, kernels and the
        iSTFT are the published ones, which the strict load then checks tensor by tensor.
        """
        try:
            base, mel_bins, _ = shapes["conv_pre.parametrizations.weight.original1"]
            f0_channels = shapes["f0_predictor.classifier.weight"][1]
            harmonics = shapes["m_source.l_linear.weight"][1] - 1
        except KeyError as missing:
            raise ValueError(f"not a HiFT vocoder state: no tensor {missing}") from None
        return cls(mel_bins=mel_bins, base_channels=base, f0_channels=f0_channels,
                   harmonics=harmonics)


class Snake(nn.Module):
    """x + sin²(αx)/α, one α per channel (periodic activation for waveforms)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]
        # The 1e-9 keeps a zero α finite, as the trained model was run.
        return x + torch.sin(x * alpha).pow(2) / (alpha + 1e-9)


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class SnakeResBlock(nn.Module):
    """Three (Snake, dilated conv, Snake, conv) residual steps at one width."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d,
                                  padding=_padding(kernel, d)))
            for d in dilations)
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel)))
            for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1,
                                            self.activations2, self.convs2, strict=True):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class F0Predictor(nn.Module):
    """Five 3-wide convolutions with ELU, then a linear read-out: |F0| in Hz per frame."""

    def __init__(self, mel_bins: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [weight_norm(nn.Conv1d(mel_bins if i == 0 else channels, channels, 3,
                                             padding=1)), nn.ELU()]
        self.condnet = nn.Sequential(*layers)  # convs at 0, 2, 4, 6, 8 as the file names them
        self.classifier = nn.Linear(channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        hidden = self.condnet(mel).transpose(1, 2)
        return self.classifier(hidden).squeeze(-1).abs()  # [B, frames]


class HarmonicSource(nn.Module):
    """F0 at the output rate -> one excitation channel: sines of F0 and its overtones.

    Phase is integrated at the frame rate and interpolated back up (a cheap, smooth phase
    for the hop-held F0); voiced samples carry the sines plus faint noise, unvoiced ones
    noise only; a linear layer and tanh merge the harmonics.
    """

    def __init__(self, config: HiFTConfig) -> None:
        super().__init__()
        self.config = config
        self.l_linear = nn.Linear(config.harmonics + 1, 1)

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """f0: [B, samples, 1] in Hz -> source [B, samples, 1]."""
        c = self.config
        scale = c.hop
        overtones = torch.arange(1, c.harmonics + 2, dtype=f0.dtype, device=f0.device)
        cycles = (f0 * overtones / c.sample_rate) % 1  # [B, samples, harmonics+1]
        # A random starting phase for every overtone, none for the fundamental.
        start = torch.rand(f0.shape[0], c.harmonics + 1, device=f0.device, dtype=f0.dtype,
                           generator=generator)
        start[:, 0] = 0
        cycles[:, 0, :] = cycles[:, 0, :] + start
        per_frame = F.interpolate(cycles.transpose(1, 2), scale_factor=1 / scale,
                                  mode="linear")
        phase = torch.cumsum(per_frame, dim=2) * 2 * np.pi
        phase = F.interpolate(phase * scale, scale_factor=scale, mode="linear").transpose(1, 2)
        sines = c.sine_amp * torch.sin(phase)
        voiced = (f0 > c.voiced_threshold).to(f0.dtype)
        noise_amp = voiced * c.noise_std + (1 - voiced) * c.sine_amp / 3
        # Drawn into a tensor laid out as the sines are (harmonic-major: the phase was
        # made [B, harmonics, samples] and transposed): torch fills a non-contiguous tensor
        # in another order than a contiguous one, and the reference's randn_like(sines)
        # draws into that layout.
        batch, samples, harmonics = sines.shape
        noise = torch.empty(batch, harmonics, samples, device=f0.device, dtype=f0.dtype)
        noise = noise_amp * noise.transpose(1, 2).normal_(generator=generator)
        excitation = torch.tanh(self.l_linear(sines * voiced + noise))
        # The reference also draws a noise branch of this size that the generator never
        # uses; drawing it too keeps our random stream in step with a reference seeded the
        # same way (a parity test compares them), at the cost of one sample per sample.
        torch.randn(voiced.shape, device=f0.device, dtype=f0.dtype, generator=generator)
        return excitation


def stft_window(n_fft: int) -> torch.Tensor:
    """Not a parameter in the file: the periodic Hann window, made in float64 and cast as
    the reference makes it (scipy), so the STFTs agree to the last bit."""
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device="cpu").float()


class HiFTGenerator(nn.Module):
    def __init__(self, config: HiFTConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or HiFTConfig()
        self.f0_predictor = F0Predictor(c.mel_bins, c.f0_channels)
        self.m_source = HarmonicSource(c)
        self.conv_pre = weight_norm(nn.Conv1d(c.mel_bins, c.base_channels, 7, padding=3))
        widths = [c.base_channels // 2 ** i for i in range(len(c.upsample_rates) + 1)]
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(widths[i], widths[i + 1], k, u,
                                           padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernels, strict=True)))
        # The source's STFT (n_fft + 2 channels at the iSTFT frame rate) is strided down to
        # each upsampling stage's rate: the rates still to come, multiplied.
        spec = c.n_fft + 2
        still_to_come = [math.prod(c.upsample_rates[i + 1:]) for i in range(len(c.upsample_rates))]
        self.source_downs = nn.ModuleList(
            nn.Conv1d(spec, widths[i + 1], 1) if rate == 1 else
            nn.Conv1d(spec, widths[i + 1], rate * 2, rate, padding=rate // 2)
            for i, rate in enumerate(still_to_come))
        self.source_resblocks = nn.ModuleList(
            SnakeResBlock(widths[i + 1], k, d)
            for i, (k, d) in enumerate(zip(c.source_resblock_kernels,
                                           c.source_resblock_dilations, strict=True)))
        self.resblocks = nn.ModuleList(
            SnakeResBlock(widths[i + 1], k, d)
            for i in range(len(c.upsample_rates))
            for k, d in zip(c.resblock_kernels, c.resblock_dilations, strict=True))
        self.conv_post = weight_norm(nn.Conv1d(widths[-1], spec, 7, padding=3))
        self.register_buffer("stft_window", stft_window(c.n_fft), persistent=False)

    def fold_weight_norm(self) -> None:
        """Replace every weight-norm parametrization by its weight (for inference: the
        norm is then computed once, not on every call). The state dict's names change."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    def source(self, mel: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """mel [B, bins, frames] -> the excitation [B, 1, frames * hop]."""
        f0 = self.f0_predictor(mel)
        # F0 held for each frame's hop samples (nearest-neighbour upsampling).
        f0 = F.interpolate(f0[:, None], scale_factor=self.config.hop, mode="nearest")
        f0 = f0.transpose(1, 2)
        return self.m_source(f0, generator).transpose(1, 2)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """mel [B, bins, frames] and excitation [B, 1, frames * hop] -> speech [B, samples]."""
        c = self.config
        spec = torch.view_as_real(torch.stft(
            source.squeeze(1), c.n_fft, c.istft_hop, c.n_fft, window=self.stft_window,
            return_complex=True))
        spec = torch.cat([spec[..., 0], spec[..., 1]], dim=1)
        x = self.conv_pre(mel)
        blocks = len(c.resblock_kernels)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, c.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")  # one frame more: the STFT's frame count
            x = x + self.source_resblocks[i](self.source_downs[i](spec))
            x = sum(self.resblocks[i * blocks + j](x) for j in range(blocks)) / blocks
        x = self.conv_post(F.leaky_relu(x))  # the default 0.01 slope here, as trained
        bins = c.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :bins]).clamp(max=1e2)
        phase = torch.sin(x[:, bins:])
        spectrum = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        wave = torch.istft(spectrum, c.n_fft, c.istft_hop, c.n_fft, window=self.stft_window)
        return wave.clamp(-c.audio_limit, c.audio_limit)

    @torch.inference_mode()
    def forward(self, mel: torch.Tensor, cache_source: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, bins, frames] -> (speech [B, frames * hop], excitation [B, 1, same]).

        `cache_source`: the excitation the previous call made for the frames this call
        repeats; it replaces the start of this call's, so the overlap's phase is continuous.
        """
        source = self.source(mel, generator)
        if cache_source is not None and cache_source.shape[2]:
            source[:, :, :cache_source.shape[2]] = cache_source
        return self.decode(mel, source), source


def read_hift_state(path: Path) -> dict[str, torch.Tensor]:
    """hift.pt's tensors, named as our module names them (the `generator.` prefix dropped).

    torch.load with weights_only=True: torch's restricted unpickler, which rebuilds
    tensors and plain containers only and refuses any other object, so a tampered file
    cannot run code (the file is a pickle; no safetensors copy is published).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file, or one that asks for more than tensors
        raise ValueError(f"cannot read the vocoder weights {path}: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a vocoder's tensors")
    return {k.removeprefix(CHECKPOINT_PREFIX): v for k, v in state.items()}


def check_state_keys(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse a file whose names or shapes are not the module's, naming the differences."""
    diff = state_differences(model, state)
    if diff:
        parts = []
        if diff.missing:
            parts.append(f"{len(diff.missing)} missing (first: {', '.join(diff.missing[:3])})")
        if diff.unexpected:
            parts.append(f"{len(diff.unexpected)} unexpected "
                         f"(first: {', '.join(diff.unexpected[:3])})")
        if diff.reshaped:
            parts.append("wrong shapes: " + ", ".join(
                f"{k} {diff.got[k]} instead of {diff.want[k]}" for k in diff.reshaped[:3]))
        raise ValueError(f"{path} is not a HiFT vocoder as published: " + "; ".join(parts))


def load_hift(path: Path, *, device: torch.device | str = "cpu") -> HiFTGenerator:
    """Read hift.pt strictly, fold its weight norm, and place it for inference."""
    state = read_hift_state(path)
    config = HiFTConfig.from_shapes({k: tuple(v.shape) for k, v in state.items()})
    # Built without memory or random init, then given the file's tensors themselves.
    with building(torch.float32), torch.device("meta"):
        model = HiFTGenerator(config)
    check_state_keys(model, state, path)
    model.load_state_dict(state, strict=True, assign=True)
    model.stft_window = stft_window(config.n_fft)
    model.fold_weight_norm()
    return model.to(device).eval()
