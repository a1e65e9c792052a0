"""Token2wav streamed as MiniCPM-o's official duplex loop streams it: codes in, speech out.

The TTS hands over speech codes unit by unit (25 a second). They collect in a buffer
that starts every turn as three silence codes (4218): 120 ms of lead-in. Each time the
buffer holds a window of 28 codes, the flow turns the window into mel frames for its
first 25 codes (the last 3 are the conformer's look-ahead: they shape the frames before
them and are voiced by the next window), the vocoder turns those frames into one second
of speech, and 25 codes leave the buffer. At the end of a turn whatever is left is run
as the last chunk (look-ahead included), the held-back vocoder tail comes out, and the
caches go back to their turn-start state for the next turn.

Two details of the official loop (MiniCPMODuplex._generate_waveform_from_tokens in
MiniCPM-o 4.5's modeling_minicpmo.py) that a plain 28/25 loop misses:
- in the first unit of a turn it flushes (`push(..., flush=True)` here): windows run
  from 8 codes up (3 of look-ahead and at least 5 to voice), at most 28, and the codes
  they voiced leave, so the first speech of an answer does not wait for a full window;
- the turn-start state is computed once per voice (the prompt through the flow) and
  restored, never recomputed, at each turn's start and on barge-in.

The flow and vocoder caches are never changed in place, so restoring them is taking
the saved objects back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from app.model.minicpm_o.token2wav.flow import DEFAULT_TIMESTEPS, SILENCE_CODE, FlowCache, FlowModel
from app.model.minicpm_o.token2wav.hift import HiFTGenerator, load_hift
from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.tiny_hift import HIFT_FILE
from app.model.minicpm_o.token2wav.vocoder_stream import VocoderStream

SAMPLE_RATE = 24000
STRIDE_CODES = 25  # codes voiced per window: one second
LEAD_IN = (SILENCE_CODE,) * 3  # the buffer at every turn's start
FLUSH_MIN_VOICED = 5  # a flushing window voices at least this many codes
VOCODER_SEED = 0  # the vocoder's source noise: the same speech for the same codes


class Token2Wav:
    """The flow and the vocoder with one voice's turn-start state; one turn at a time.

    `begin(prompt)` once per voice; then per turn `push` (any number of times) and
    `finish`; `reset` abandons a turn (barge-in). All methods return float32 24 kHz
    mono, possibly empty.
    """

    def __init__(self, flow: FlowModel, hift: HiFTGenerator, *,
                 n_timesteps: int = DEFAULT_TIMESTEPS, seed: int = VOCODER_SEED) -> None:
        self.flow = flow
        self.n_timesteps = n_timesteps
        device = hift.stft_window.device
        self.vocoder = VocoderStream(hift, torch.Generator(device=device).manual_seed(seed))
        self.window_codes = STRIDE_CODES + flow.lookahead  # 28
        self.vocab_size = flow.config.vocab_size
        self._prompt: VoicePrompt | None = None
        self._turn_start: FlowCache | None = None
        self._cache: FlowCache | None = None
        self._buffer: list[int] = []

    @classmethod
    def load(cls, folder: Path, *, device: torch.device | str = "cpu",
             n_timesteps: int = DEFAULT_TIMESTEPS, seed: int = VOCODER_SEED) -> Token2Wav:
        """The checkpoint's token2wav folder (flow.yaml, flow.pt, hift.pt)."""
        folder = Path(folder)
        return cls(FlowModel.load(folder, device=device),
                   load_hift(folder / HIFT_FILE, device=device),
                   n_timesteps=n_timesteps, seed=seed)

    @property
    def voice(self) -> VoicePrompt | None:
        return self._prompt

    def begin(self, prompt: VoicePrompt) -> None:
        """Take a voice: its prompt runs through the flow once; every turn starts there."""
        self._turn_start = self.flow.setup_cache(prompt, self.n_timesteps)
        self._prompt = prompt
        self.reset()

    def reset(self) -> None:
        """Drop the turn (barge-in, or a new turn): the turn-start caches, the lead-in."""
        if self._turn_start is None:
            raise RuntimeError("token2wav has no voice yet: call begin(prompt) first")
        self._cache = self._turn_start
        self.vocoder.reset()
        self._buffer = list(LEAD_IN)

    def push(self, codes: Sequence[int] | np.ndarray | torch.Tensor, *,
             flush: bool = False) -> np.ndarray:
        """Add a unit's codes; return the speech of every window that filled.

        `flush`: the turn's first unit, as the official loop runs it: also run a
        shorter window when at least 8 codes wait, so the answer starts sooner.
        """
        self._buffer += self._checked(codes)
        lookahead = self.flow.lookahead
        pieces = []
        if flush:
            while len(self._buffer) >= lookahead + FLUSH_MIN_VOICED:
                size = min(self.window_codes, len(self._buffer))
                pieces.append(self._run(self._buffer[:size], last=False))
                self._buffer = self._buffer[min(STRIDE_CODES, size - lookahead):]
        else:
            while len(self._buffer) >= self.window_codes:
                pieces.append(self._run(self._buffer[:self.window_codes], last=False))
                self._buffer = self._buffer[STRIDE_CODES:]
        return _joined(pieces)

    def finish(self) -> np.ndarray:
        """End the turn: the rest of the buffer as the last chunk, the held tail with it;
        then back to the turn start for the next turn."""
        pieces = [self._run(self._buffer, last=True)] if self._buffer else []
        self.reset()
        return _joined(pieces)

    def _run(self, codes: list[int], *, last: bool) -> np.ndarray:
        if self._cache is None or self._prompt is None:
            raise RuntimeError("token2wav has no voice yet: call begin(prompt) first")
        tensor = torch.tensor([codes], dtype=torch.int32)
        mel, self._cache = self.flow.inference_chunk(tensor, self._prompt, self._cache,
                                                     last=last, n_timesteps=self.n_timesteps)
        return self.vocoder.step(mel, last=last).float().cpu().numpy()

    def _checked(self, codes: Sequence[int] | np.ndarray | torch.Tensor) -> list[int]:
        if isinstance(codes, torch.Tensor):
            codes = codes.reshape(-1).tolist()
        values = [int(c) for c in np.asarray(codes).reshape(-1)]
        bad = [c for c in values if not 0 <= c < self.vocab_size]
        if bad:
            raise ValueError(f"speech codes must be in [0, {self.vocab_size}); got {bad[:5]} "
                             "(the TTS's end-of-speech code must not reach token2wav)")
        return values


def _joined(pieces: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
