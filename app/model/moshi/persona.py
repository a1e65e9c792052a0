"""PersonaPlex's persona prefix: what the model hears and says before the user is heard.

The order, as NVIDIA's `LMGen.step_system_prompts` feeds it:

1. the voice prompt: the recording, Mimi-encoded, as the model's OWN audio stream, one
   frame a step, its text stream PAD;
2. 0.5 s (6 frames) of silence: the model's audio is Mimi's code for silence, text PAD;
3. the role text "<system> … <system>", one token a frame, the model's audio silence;
4. 0.5 s (6 frames) of silence again.

All along, the user's stream is Mimi's code for a 440 Hz sine: the "nobody is talking
yet" signal PersonaPlex was trained with. PersonaPlex uses one fixed code vector each
for silence and the sine; here they are computed from this checkpoint's own Mimi (the
codes of a steady-state frame, after the codec's receptive field has filled), so the
tiny model and any Mimi get their own.

Kyutai's Moshi was not trained with such a prefix; PersonaPlex's checkpoints are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.model.contract import BackendError
from app.model.moshi.codec import FRAME_SAMPLES, StreamingEncoder
from app.model.moshi.engine import NUM_CODEBOOKS, Forced
from app.model.moshi.text import TextVocab, system_prompt
from app.model.voice_file import read_mono

SAMPLE_RATE = 24000
FRAME_RATE = 12.5
SILENCE_FRAMES = int(0.5 * FRAME_RATE)  # PersonaPlex's audio_silence_frame_cnt
SINE_HZ = 440.0
VOICE_LEVEL_DBFS = -24.0  # PersonaPlex normalises to -24 LUFS; this is plain RMS
_STEADY_FRAME = 5  # frames of a constant signal after which the codes are taken
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class PrefixFrame:
    """One frame of the prefix: what stage it belongs to, and the tokens fed."""

    stage: str  # "voice", "silence", "text"
    user: tuple[int, ...]
    forced: Forced


def constant_codes(mimi: torch.nn.Module, wave_of: object) -> tuple[int, ...]:
    """The codes Mimi gives a steady signal `wave_of(seconds)`: those of frame
    _STEADY_FRAME of a continuous stream (see the module docstring)."""
    encoder = StreamingEncoder(mimi, NUM_CODEBOOKS)
    for i in range(_STEADY_FRAME + 1):
        t = (np.arange(FRAME_SAMPLES) + i * FRAME_SAMPLES) / SAMPLE_RATE
        codes = encoder.encode(torch.from_numpy(np.asarray(wave_of(t), dtype=np.float32)))
    return tuple(int(c) for c in codes.reshape(-1).tolist())


def silence_codes(mimi: torch.nn.Module) -> tuple[int, ...]:
    return constant_codes(mimi, lambda t: np.zeros_like(t))


def sine_codes(mimi: torch.nn.Module) -> tuple[int, ...]:
    # PersonaPlex's sine is at half scale.
    return constant_codes(mimi, lambda t: 0.5 * np.sin(2 * np.pi * SINE_HZ * t))


def read_voice(path: Path) -> np.ndarray:
    """A voice recording as 24 kHz mono float32 at VOICE_LEVEL_DBFS RMS."""
    if path.suffix.lower() == ".pt":
        raise BackendError(
            f"{path.name} is a PersonaPlex prepared voice (its own generator state), which "
            "Duetto does not read",
            hint="use the voice's recording (a .wav) instead; Duetto prepares and caches it",
        )
    mono = read_mono(path, SAMPLE_RATE)
    if mono.size < FRAME_SAMPLES:
        raise BackendError(f"the voice recording {path.name} is shorter than 80 ms",
                           hint="use a few seconds of clear speech")
    rms = float(np.sqrt(np.mean(mono**2)))
    if rms > 0:
        mono = mono * (10 ** (VOICE_LEVEL_DBFS / 20) / rms)
    return np.clip(mono, -1.0, 1.0).astype(np.float32)


def voice_key(path: Path) -> str:
    """A cache key for a voice: its bytes' hash (a renamed copy hits, an edited file misses)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def encode_voice(mimi: torch.nn.Module, audio: np.ndarray) -> torch.Tensor:
    """(NUM_CODEBOOKS, frames) codes of a voice recording, zero-padded to whole frames."""
    frames = -(-audio.size // FRAME_SAMPLES)
    padded = np.zeros(frames * FRAME_SAMPLES, dtype=np.float32)
    padded[: audio.size] = audio
    encoder = StreamingEncoder(mimi, NUM_CODEBOOKS)
    return encoder.encode(torch.from_numpy(padded))[0]


def voice_frames(codes: torch.Tensor, sine: tuple[int, ...], pad: int) -> list[PrefixFrame]:
    return [
        PrefixFrame("voice", sine, Forced(text=pad, audio=tuple(int(c) for c in codes[:, i])))
        for i in range(codes.shape[1])
    ]


def role_frames(role: str, vocab: TextVocab, sine: tuple[int, ...],
                silence: tuple[int, ...]) -> list[PrefixFrame]:
    """Stages 2–4: silence, the role text one token a frame, silence."""
    quiet = PrefixFrame("silence", sine, Forced(text=vocab.pad_id, audio=silence))
    frames = [quiet] * SILENCE_FRAMES
    if role.strip():
        frames += [PrefixFrame("text", sine, Forced(text=tok, audio=silence))
                   for tok in vocab.encode(system_prompt(role))]
    frames += [quiet] * SILENCE_FRAMES
    return frames
