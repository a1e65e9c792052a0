"""The token2wav flow: speech codes -> 80-bin mel frames (50 a second), streamed.

A chunk of codes is embedded, run through the upsampling conformer encoder (two frames
per code, the last `pre_lookahead` (3) codes of a chunk only looking ahead), projected
to 80 channels (`mu`), and a conditional flow is integrated from Gaussian noise to a mel
by a fixed-step Euler solver: `n_timesteps` (10 in the published setup, fewer
selectable) on a cosine schedule, each step running the DiT twice (with and without
its conditions) for classifier-free guidance with `inference_cfg_rate` 0.7.

Streaming follows the reference (minicpmo-utils 1.0.6, `CausalMaskedDiffWithXvec`
`setup_cache` / `inference_chunk`, driven by `Token2wav.stream`): `setup_cache` runs
the voice prompt's codes (plus three silence codes to look ahead into) with the
prompt's mel as the condition and keeps every cache; each `inference_chunk` then
continues from them with no condition, and afterwards both attention caches are cut to
the prompt's frame count plus 100 frames, exactly as `Token2wav.stream` cuts them
(which frames survive follows from each cache's order, see conformer.py and dit.py).
The DiT keeps one cache per solver step.

The noise: the reference draws one buffer of 30,000 frames from torch's global random
state when the solver is built, and each chunk reads it from the offset given by the
DiT cache's length. Here the same kind of buffer comes from a generator seeded with
`NOISE_SEED`, so a given input always gives the same mel; the reference scripts load
this buffer into the reference for parity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from app.model.building import building
from app.model.minicpm_o.token2wav.conformer import ConformerCache, UpsampleConformerEncoder
from app.model.minicpm_o.token2wav.dit import DiT, DiTCache
from app.model.minicpm_o.token2wav.flow_yaml import EstimatorConfig, FlowConfig, read_flow_yaml
from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.state_check import state_differences

SILENCE_CODE = 4218  # the speech tokenizer's code for silence
NOISE_SEED = 0
NOISE_FRAMES = 50 * 600  # the reference's buffer: 600 s at 50 frames a second
CACHE_TAIL_FRAMES = 100  # frames kept after the prompt's when the caches are cut
DEFAULT_TIMESTEPS = 10


class FlowLoadError(RuntimeError):
    """flow.pt does not fit the tree flow.yaml describes (names what differs)."""


@dataclass(frozen=True)
class FlowCache:
    """Everything one chunk leaves for the next; never changed in place, so a copy kept
    after `setup_cache` restores the turn-start state.

    `estimator_cnn`: [steps, depth, 2, 2*hidden, 2] and `estimator_att`: [steps, depth,
    2, heads, T, 2*head_dim] (batch 2: the conditioned and the unconditioned pass).
    """

    conformer: ConformerCache
    estimator_cnn: torch.Tensor
    estimator_att: torch.Tensor
    prompt_frames: int
    n_timesteps: int

    @property
    def frames(self) -> int:
        """Frames the DiT attends to besides a new chunk's (also the noise offset)."""
        return self.estimator_att.shape[4]


def flow_noise(channels: int, seed: int = NOISE_SEED, frames: int = NOISE_FRAMES) -> torch.Tensor:
    """The solver's starting noise, [1, channels, frames], the same on every machine."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn((1, channels, frames), generator=generator, dtype=torch.float32)


def cosine_schedule(n_timesteps: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """n+1 times from 0 to 1, denser near 0 (where the mel takes shape)."""
    t = torch.linspace(0, 1, n_timesteps + 1, dtype=dtype, device=device)
    return 1 - torch.cos(t * 0.5 * math.pi)


class FlowSolver(nn.Module):
    """Euler integration of the DiT's velocity with classifier-free guidance."""

    def __init__(self, estimator_config: EstimatorConfig, inference_cfg_rate: float) -> None:
        super().__init__()
        self.estimator = DiT(estimator_config)
        self.inference_cfg_rate = inference_cfg_rate
        self._noise: torch.Tensor | None = None

    def noise(self, offset: int, frames: int, like: torch.Tensor) -> torch.Tensor:
        if self._noise is None or self._noise.device != like.device:
            # Drawn on the CPU (the same numbers on every machine), kept where it is read.
            self._noise = flow_noise(self.estimator.config.out_channels).to(like.device)
        if offset + frames > self._noise.shape[2]:
            raise ValueError(f"the flow's noise covers {self._noise.shape[2]} frames; this "
                             f"chunk needs {offset + frames} (the voice prompt is too long)")
        return self._noise[:, :, offset:offset + frames].to(like)

    def solve_chunk(self, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor,
                    n_timesteps: int, cnn_cache: torch.Tensor | None,
                    att_cache: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mu, cond: [1, 80, T]; spks: [1, 80]; caches: one per step, or None at first."""
        offset = 0 if att_cache is None else att_cache.shape[4]
        x = self.noise(offset, mu.shape[2], mu)
        times = cosine_schedule(n_timesteps, dtype=mu.dtype, device=mu.device)
        rate = self.inference_cfg_rate
        # Batch of two: with the conditions, and with them zeroed (the guidance's baseline).
        mu2 = torch.cat([mu, torch.zeros_like(mu)])
        spks2 = torch.cat([spks, torch.zeros_like(spks)])
        cond2 = torch.cat([cond, torch.zeros_like(cond)])
        t, dt = times[:1], times[1] - times[0]
        new_cnn, new_att = [], []
        for step in range(n_timesteps):
            cache = None if att_cache is None else DiTCache(cnn_cache[step], att_cache[step])
            velocity, step_cache = self.estimator.forward_chunk(
                x.repeat(2, 1, 1), mu2, t.repeat(2), spks2, cond2, cache)
            guided, baseline = velocity.chunk(2)
            x = x + dt * ((1.0 + rate) * guided - rate * baseline)
            # Time advances by accumulation and each step aims at the next scheduled
            # time, as the reference does (its float rounding included).
            t = t + dt
            if step + 1 < n_timesteps:
                dt = times[step + 2] - t
            new_cnn.append(step_cache.cnn)
            new_att.append(step_cache.att)
        return x, torch.stack(new_cnn), torch.stack(new_att)


class FlowModel(nn.Module):
    """The published `flow.pt` tree; `setup_cache` and `inference_chunk` stream it."""

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        if config.encoder.input_size != config.input_size or \
                config.encoder.input_size != config.encoder.output_size:
            raise ValueError("the flow's code embedding, encoder input and encoder output "
                             "must be equally wide (they are in the published flow)")
        self.config = config
        self.input_embedding = nn.Embedding(config.vocab_size, config.input_size)
        self.spk_embed_affine_layer = nn.Linear(config.spk_embed_dim, config.output_size)
        self.encoder = UpsampleConformerEncoder(config.encoder)
        self.encoder_proj = nn.Linear(config.encoder.output_size, config.output_size)
        self.decoder = FlowSolver(config.estimator, config.inference_cfg_rate)

    @property
    def lookahead(self) -> int:
        return self.encoder.lookahead

    @property
    def up_rate(self) -> int:
        return self.encoder.up_rate

    @classmethod
    def load(cls, folder: Path, *, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> FlowModel:
        """flow.yaml + flow.pt from the checkpoint's token2wav folder."""
        folder = Path(folder)
        config = read_flow_yaml(folder / "flow.yaml")
        # Built without memory or random init (the tree holds no buffers), then given the
        # file's tensors themselves.
        with building(torch.float32), torch.device("meta"):
            model = cls(config)
        # weights_only=True: torch's restricted unpickler (tensors and plain containers
        # only), the safe way to read a .pt file; nothing in it can run code.
        try:
            state = torch.load(folder / "flow.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a bad file
            raise FlowLoadError(f"{folder / 'flow.pt'} is not a plain tensor file that can be "
                                f"read safely ({type(exc).__name__}: {exc})") from exc
        if not isinstance(state, dict):
            raise FlowLoadError(f"{folder / 'flow.pt'} holds a {type(state).__name__}, "
                                "not a state dict of tensors")
        check_state_keys(model, state, folder / "flow.pt")
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(device=device, dtype=dtype).eval()

    def _speaker(self, prompt: VoicePrompt) -> torch.Tensor:
        weight = self.spk_embed_affine_layer.weight
        return self.spk_embed_affine_layer(F.normalize(prompt.speaker.to(weight), dim=1))

    def _embed(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 2 or codes.shape[0] != 1:
            raise ValueError(f"codes must be [1, T], got {tuple(codes.shape)}")
        if codes.shape[1] == 0:
            raise ValueError("no speech codes to run (an empty chunk)")
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(f"speech codes must be in [0, {self.config.vocab_size}), got "
                             f"{low}..{high}")
        return self.input_embedding(codes.to(self.input_embedding.weight.device).long())

    @torch.inference_mode()
    def setup_cache(self, prompt: VoicePrompt,
                    n_timesteps: int = DEFAULT_TIMESTEPS) -> FlowCache:
        """Run the voice prompt through the flow once; its caches start every turn."""
        _check_steps(n_timesteps)
        silence = torch.full((1, self.lookahead), SILENCE_CODE, dtype=prompt.tokens.dtype,
                             device=prompt.tokens.device)
        codes = torch.cat([prompt.tokens, silence], dim=1)
        h, conformer = self.encoder.forward_chunk(self._embed(codes), None, last=False)
        mu = self.encoder_proj(h).transpose(1, 2)
        cond = prompt.mel.to(mu).transpose(1, 2)
        if cond.shape[2] != mu.shape[2]:
            raise ValueError(f"prompt mel has {cond.shape[2]} frames, its codes give "
                             f"{mu.shape[2]}")
        _, cnn, att = self.decoder.solve_chunk(mu, self._speaker(prompt), cond, n_timesteps,
                                               None, None)
        return FlowCache(conformer, cnn, att, prompt_frames=prompt.mel.shape[1],
                         n_timesteps=n_timesteps)

    @torch.inference_mode()
    def inference_chunk(self, codes: torch.Tensor, prompt: VoicePrompt, cache: FlowCache, *,
                        last: bool, n_timesteps: int = DEFAULT_TIMESTEPS
                        ) -> tuple[torch.Tensor, FlowCache]:
        """codes [1, T] -> (mel [1, 80, frames], the next cache).

        Not `last`: the final `lookahead` codes only look ahead, frames = 2 (T - 3).
        `last`: the turn's end, frames = 2 T.
        """
        if n_timesteps != cache.n_timesteps:
            raise ValueError(f"the cache was made with {cache.n_timesteps} solver steps, "
                             f"this chunk asks for {n_timesteps}; set up the cache again")
        if not last and codes.shape[1] <= self.lookahead:
            raise ValueError(f"a chunk that is not the last needs more than {self.lookahead} "
                             f"codes (the look-ahead), got {codes.shape[1]}")
        h, conformer = self.encoder.forward_chunk(self._embed(codes), cache.conformer, last=last)
        mu = self.encoder_proj(h).transpose(1, 2)
        mel, cnn, att = self.decoder.solve_chunk(mu, self._speaker(prompt), torch.zeros_like(mu),
                                                 n_timesteps, cache.estimator_cnn,
                                                 cache.estimator_att)
        return mel, trim_cache(FlowCache(conformer, cnn, att, cache.prompt_frames, n_timesteps))


def trim_cache(cache: FlowCache, tail: int = CACHE_TAIL_FRAMES) -> FlowCache:
    """Cut both attention caches to the prompt's frame count + `tail`, as 1.0.6's
    Token2wav.stream does after each chunk: the first `prompt_frames` entries along time
    and the last `tail`, in each cache's own order. That keeps attention and the
    conformer's relative positions bounded however long a turn runs.

    What survives is not "the prompt and the last 100 frames" for both. The conformer's
    cache is oldest-first, so it keeps the prompt's frames and the latest 100 (read back
    through its doubled layout, see conformer.py). The DiT's cache is newest-first, so
    it keeps the newest `prompt_frames` frames and the oldest 100, which once the turn
    is long are the prompt's last 100: a long turn's DiT sees less and less of the voice
    prompt. Kept as it is, because the reference's output is what we match."""
    keep = cache.prompt_frames + tail
    att, conformer = cache.estimator_att, cache.conformer
    if att.shape[4] > keep:
        att = torch.cat([att[:, :, :, :, :cache.prompt_frames], att[:, :, :, :, -tail:]], dim=4)
    if conformer.att.shape[3] > keep:
        conformer = ConformerCache(
            cnn=conformer.cnn,
            att=torch.cat([conformer.att[:, :, :, :cache.prompt_frames],
                           conformer.att[:, :, :, -tail:]], dim=3))
    return FlowCache(conformer, cache.estimator_cnn, att, cache.prompt_frames,
                     cache.n_timesteps)


def cache_bytes(config: FlowConfig, prompt_frames: int, n_timesteps: int,
                bytes_per_value: int = 4) -> int:
    """Bytes a FlowCache holds between chunks once a turn has run long enough to be cut
    (prompt + 100 frames). A chunk briefly holds about twice that (the old cache and the
    new one before the cut) plus its own activations.

    The DiT's attention cache is most of it: steps x blocks x 2 passes x heads x frames x
    2 head_dim; for the published flow, a 10 s prompt (500 frames) and 10 steps, 0.76 GiB
    in float32.
    """
    frames = prompt_frames + CACHE_TAIL_FRAMES
    est, enc = config.estimator, config.encoder
    estimator_att = n_timesteps * est.depth * 2 * est.num_heads * frames * 2 * est.head_dim
    estimator_cnn = n_timesteps * est.depth * 2 * 2 * est.hidden_size * 2
    layers = enc.num_blocks + enc.num_up_blocks
    conformer_att = layers * frames * 2 * enc.output_size
    conformer_cnn = enc.output_size * (2 + 2 * enc.up_stride)
    return bytes_per_value * (estimator_att + estimator_cnn + conformer_att + conformer_cnn)


def _check_steps(n_timesteps: int) -> None:
    if not 1 <= n_timesteps <= 100:
        raise ValueError(f"n_timesteps must be 1..100, got {n_timesteps}")


def check_state_keys(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Every name and shape of `state` must be the model's: say which differ if not."""
    diff = state_differences(model, state)
    if diff:
        parts = []
        if diff.missing:
            parts.append(f"{len(diff.missing)} missing (e.g. {', '.join(diff.missing[:3])})")
        if diff.unexpected:
            parts.append(f"{len(diff.unexpected)} unexpected "
                         f"(e.g. {', '.join(diff.unexpected[:3])})")
        if diff.reshaped:
            k = diff.reshaped[0]
            parts.append(f"{len(diff.reshaped)} of another shape (e.g. {k}: file "
                         f"{diff.got[k]}, flow.yaml's tree {diff.want[k]})")
        raise FlowLoadError(f"{source} does not fit flow.yaml: " + "; ".join(parts))
