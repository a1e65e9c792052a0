"""Streaming token2wav: talker codes in, 24 kHz waveform out, chunk by chunk.

transformers' Qwen2_5OmniToken2WavModel turns a whole code sequence into a waveform:
a DiT (flow matching, block-local attention) makes the mel spectrogram, BigVGAN makes
the wave. Streaming here uses the same two modules on windows:

* Chunks: small at first (OPENING_CODES), so the first sample comes early and each of
  the next is ready before the one before it has played, then `chunk_codes` each.
* DiT: each window starts on a DiT block boundary with `left_blocks` blocks of already
  decoded context on the left and, except at the end, `lookahead_codes` codes on the
  right. Only the window's new mel frames are kept. The starting noise is drawn once
  per absolute mel frame (not per window), so overlapping windows integrate the same
  ODE and their frames agree where their contexts agree.
* BigVGAN is a pure convolution stack with a finite receptive field (±16 mel frames for
  the real kernel/rate layout, measured by perturbation). Each vocoder window gets
  `vocoder_context` frames of context on both sides and only its middle samples are
  kept, so the streamed waveform is sample-for-sample what vocoding the assembled mel
  in one pass gives: no seam at chunk boundaries (tests/test_qwen_speech.py checks it).
  On a CPU the context is computed only by the layers that read it: each layer of the
  vocoder is cut to what the layers after it need for the kept samples
  (vocoder_span.py; the same values, a third less work on the tiny vocoder).

Fixed vocoder shapes on a CPU. torch runs BigVGAN's convolutions through oneDNN there,
which compiles kernels for every new input length and keeps memory for each. An
answer's last window was whatever was left, so a conversation kept bringing new lengths
(427 distinct convolution shapes in a 5-minute soak, all the vocoder's): the tiny
vocoder on windows of 50 lengths grew the process by 50 MB, and went on growing with
oneDNN's primitive cache capped at 64 entries (+10 MB over 250 windows); with oneDNN
off it stayed flat. So on a CPU every window that can be is one fixed length,
`steady_frames`: a window may reach further left than `vocoder_context` (frames beyond
the receptive field do not change the kept samples, and its right edge stays where it
was, so the end of an answer is vocoded exactly), and the opening chunks' windows,
which start at the first frame, have fixed lengths of their own. With the layers cut to
the kept frames, a shape is the window's length and the kept frames' place in it. A
window of any other shape (the last one of an answer) runs with oneDNN off:
about 1.6 times slower, but it compiles and keeps nothing. A GPU runs every window as
it comes; nothing changes there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import RungeKutta4ODESolver

from app.model.qwen_omni import vocoder_span

VOCODER_CONTEXT_FRAMES = 18
# An answer's first chunks, in codes (20 ms each), before the steady `chunk_codes`. The
# first sample must come early, and playing each chunk must leave time to make the next.
# The first chunk waits for its codes and for the 15 codes the DiT's look-ahead and the
# vocoder's context hold back; each chunk after it costs a DiT pass and a vocoder window
# (on the tiny model in a live bench session on a 2-core CPU, 12 codes took 0.12-0.18 s
# and 24 codes 0.17-0.31 s). Played at once, a 6-code first chunk (0.12 s) ran dry before
# the next came whenever the machine was busy with the user's speech, and a 12-code one
# (0.24 s) did before a 24-code second; 12 and 12, then 24, keep ahead from the first.
OPENING_CODES = (12, 12)


@contextmanager
def without_onednn() -> Iterator[None]:
    """torch's CPU kernels without oneDNN for a moment (the flag is process-wide; the
    model's work runs on one thread, and anything else running meanwhile only takes
    torch's own kernels)."""
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


class VoiceStream:
    """Codes pushed one at a time; `pull()` returns new audio when a chunk is due."""

    def __init__(
        self,
        token2wav,
        speaker: dict,
        *,
        chunk_codes: int = 24,
        opening_codes: tuple[int, ...] = OPENING_CODES,
        lookahead_codes: int = 6,
        left_blocks: int = 1,
        vocoder_context: int = VOCODER_CONTEXT_FRAMES,
        num_steps: int = 10,
        guidance_scale: float = 0.5,
        sway_coefficient: float = -1.0,
        seed: int = 0,
    ) -> None:
        self.dit = token2wav.code2wav_dit_model
        self.vocoder = token2wav.code2wav_bigvgan_model
        self.device = next(self.dit.parameters()).device
        cfg = self.dit.config
        self.repeats = int(cfg.repeats)
        self.block_frames = int(cfg.block_size)
        self.block_codes = max(1, self.block_frames // self.repeats)
        self.mel_dim = int(cfg.mel_dim)
        self.samples_per_frame = int(np.prod(token2wav.config.bigvgan_config.upsample_rates))
        # The DiT and the vocoder run in their weights' dtype (16-bit on a GPU, placement.py);
        # the flow-matching ODE integrates in float32 and hands each step to the DiT in its
        # dtype, so rounding does not accumulate over the steps.
        self.dtype = next(self.dit.parameters()).dtype
        self.cond = speaker["cond"].to(self.device, self.dtype)
        self.ref_mel = speaker["ref_mel"].to(self.device, self.dtype)
        self.chunk_frames = chunk_codes * self.repeats
        self.opening_frames = tuple(c * self.repeats for c in opening_codes)
        if not self.opening_frames or min(self.opening_frames) <= 0:
            raise ValueError("an answer opens with one or more chunks of one code or more")
        self.lookahead_codes = lookahead_codes
        self.left_codes = left_blocks * self.block_codes
        self.vctx = vocoder_context
        # Every window's length on a CPU (module docstring): room for a chunk, the frames
        # the look-ahead holds back and the context on both sides, which is also the most
        # an answer's last window needs.
        self.fixed_shapes = self.device.type == "cpu"
        self.steady_frames = self.chunk_frames + lookahead_codes * self.repeats + 2 * self.vctx
        # On a CPU the vocoder computes each layer only where the kept frames need it
        # (vocoder_span.py), so its shapes follow the window's length and where the kept
        # frames lie in it: a fixed shape is (window frames, first kept, end of kept).
        self.by_span = self.fixed_shapes and vocoder_span.needs_of(self.vocoder)
        self.fixed_windows = self._opening_windows()
        self.num_steps = num_steps
        self.guidance = guidance_scale
        self.sway = sway_coefficient
        self._gen = torch.Generator(device="cpu").manual_seed(seed)
        self.codes: list[int] = []
        self.noise = torch.empty(1, 0, self.mel_dim)
        self.mel = torch.empty(1, self.mel_dim, 0, device=self.device)  # final frames
        self.emitted_frames = 0
        self.chunks = 0  # emitted so far: which of the opening sizes is due
        self.finished = False

    # --- inputs ----------------------------------------------------------------------

    def push(self, code: int) -> None:
        if self.finished:
            raise RuntimeError("push after finish")
        self.codes.append(int(code))

    @property
    def emitted_samples(self) -> int:
        return self.emitted_frames * self.samples_per_frame

    # --- outputs ---------------------------------------------------------------------

    def pull(self) -> np.ndarray | None:
        """New samples when at least one chunk's worth is final, else None."""
        n = len(self.codes)
        mel_end = max(0, (n - self.lookahead_codes) * self.repeats)
        wave_end = mel_end - self.vctx
        need = self._chunk_frames(self.chunks)
        if wave_end - self.emitted_frames < need:
            return None
        return self._emit(mel_end, wave_end)

    def finish(self) -> np.ndarray:
        """Everything not yet emitted (the codes are complete)."""
        self.finished = True
        end = len(self.codes) * self.repeats
        if end <= self.emitted_frames:
            return np.zeros(0, dtype=np.float32)
        return self._emit(end, end)

    # --- internals -------------------------------------------------------------------

    def _noise(self, start: int, end: int) -> torch.Tensor:
        if end > self.noise.shape[1]:
            grow = max(end - self.noise.shape[1], 4 * self.block_frames)
            extra = torch.randn(1, grow, self.mel_dim, generator=self._gen)
            self.noise = torch.cat([self.noise, extra], dim=1)
        return self.noise[:, start:end].to(self.device)

    @torch.inference_mode()
    def decode_mel(self, codes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DiT flow-matching on one window: codes (1, n) → mel (1, mel_dim, n*repeats)."""
        frames = codes.shape[1] * self.repeats
        cond = self.cond.unsqueeze(1).repeat(1, frames, 1)
        dit, guidance, dtype = self.dit, self.guidance, self.dtype

        def velocity(t, x):
            x, t = x.to(dtype), t.to(dtype)
            if guidance < 1e-5:
                return dit(hidden_states=x, speaker_embedding=cond, condition_vector=self.ref_mel,
                           quantized_code=codes, time_step=t, apply_cfg=False).float()
            out = dit(hidden_states=x, speaker_embedding=cond, condition_vector=self.ref_mel,
                      quantized_code=codes, time_step=t, apply_cfg=True).float()
            cond_v, null_v = torch.chunk(out, 2, dim=0)
            return cond_v + (cond_v - null_v) * guidance

        times = torch.linspace(0, 1, self.num_steps, device=self.device)
        if self.sway is not None:
            times = times + self.sway * (torch.cos(math.pi / 2 * times) - 1 + times)
        solver = RungeKutta4ODESolver(function=velocity, initial_value=noise.float())
        return solver.integrate(times)[-1].permute(0, 2, 1)

    def _extend_mel(self, mel_end: int) -> None:
        have = self.mel.shape[-1]
        if mel_end <= have:
            return
        # Window start: a block boundary at least `left_codes` before the first new frame.
        first_code = have // self.repeats
        start = max(0, (first_code - self.left_codes) // self.block_codes * self.block_codes)
        stop = len(self.codes)
        codes = torch.tensor([self.codes[start:stop]], dtype=torch.long, device=self.device)
        mel = self.decode_mel(codes, self._noise(start * self.repeats, stop * self.repeats))
        offset = start * self.repeats
        self.mel = torch.cat([self.mel, mel[..., have - offset : mel_end - offset]], dim=-1)

    @torch.inference_mode()
    def _emit(self, mel_end: int, wave_end: int) -> np.ndarray:
        self._extend_mel(mel_end)
        lo = self._window_start(max(0, self.emitted_frames - self.vctx), mel_end)
        out = self._vocode(self.mel[..., lo:mel_end], (self.emitted_frames - lo, wave_end - lo))
        self.emitted_frames = wave_end
        self.chunks += 1
        return out.float().cpu().numpy().astype(np.float32, copy=False)

    def _chunk_frames(self, index: int) -> int:
        """Frames of the chunk with this index: the opening's sizes, then the steady one."""
        return self.opening_frames[index] if index < len(self.opening_frames) else self.chunk_frames

    def _opening_windows(self) -> tuple[tuple[int, int, int], ...]:
        """The vocoder windows' shapes (window frames, first kept, end of kept) as an
        answer streams with a pull after every code: the steady one, and those of the
        chunks before it, whose windows start at frame 0 and cannot reach that far left."""
        steady = (self.steady_frames, self.steady_frames - self.vctx - self.chunk_frames,
                  self.steady_frames - self.vctx)
        shapes = [steady]
        emitted = 0
        for index in range(len(self.opening_frames) + self.steady_frames):
            wave_end = emitted + self._chunk_frames(index)
            mel_end = wave_end + self.vctx
            lo = self._window_start(max(0, emitted - self.vctx), mel_end)
            shape = (mel_end - lo, emitted - lo, wave_end - lo)
            if shape == steady and index >= len(self.opening_frames):
                break
            shapes.append(shape)
            emitted = wave_end
        return tuple(dict.fromkeys(shapes))

    def _window_start(self, lo: int, mel_end: int) -> int:
        """Where the vocoder window ending at `mel_end` starts: `lo` (context enough), or
        further left so that it is `steady_frames` long, on a CPU."""
        if self.fixed_shapes and 0 <= mel_end - self.steady_frames <= lo:
            return mel_end - self.steady_frames
        return lo

    def _vocode(self, mel: torch.Tensor, keep: tuple[int, int]) -> torch.Tensor:
        """The waveform of the window's frames [keep[0], keep[1])."""
        if self.fixed_shapes and (mel.shape[-1], *keep) not in self.fixed_windows:
            with without_onednn():
                return self._vocode_kept(mel, keep)
        return self._vocode_kept(mel, keep)

    def _vocode_kept(self, mel: torch.Tensor, keep: tuple[int, int]) -> torch.Tensor:
        mel = mel.to(self.dtype)
        if self.by_span:
            return vocoder_span.vocode_span(self.vocoder, mel, keep)
        spf = self.samples_per_frame
        return self.vocoder(mel).reshape(-1)[keep[0] * spf : keep[1] * spf]

    @torch.inference_mode()
    def vocode_all(self) -> np.ndarray:
        """The assembled mel vocoded in one pass: the reference the stream must equal."""
        return self.vocoder(self.mel.to(self.dtype)).reshape(-1).float().cpu().numpy()
