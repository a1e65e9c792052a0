"""The inputs the MiniCPM-o goldens were recorded on, made by formula (numpy only).

scripts/minicpmo_reference.py feeds these to OpenBMB's own code (in an environment of
its own) and the conformance tests feed the same to Duetto's port. Integer arithmetic
for the frames, and audio rounded to 16-bit steps, so the bytes do not depend on the
numpy version or the CPU; goldens.json keeps each input's sha256 to prove it.
"""

from __future__ import annotations

import hashlib

import numpy as np

SAMPLE_RATE = 16_000
UNIT_SAMPLES = SAMPLE_RATE  # the app's 1 s unit; the official path pads the first to 1035 ms

# The scripted duplex session (MiniCPMODuplex.prepare, then 5 units of streaming_prefill
# and greedy streaming_generate), with the system prompt the official demo gives an omni
# (camera + microphone) session: "<|im_start|>system\n{text}\n<|audio_start|>" + voice +
# "<|audio_end|><|im_end|>".
SYSTEM_TEXT = "Streaming Omni Conversation."
PREFIX_SYSTEM_PROMPT = f"<|im_start|>system\n{SYSTEM_TEXT}\n<|audio_start|>"
SUFFIX_SYSTEM_PROMPT = "<|audio_end|><|im_end|>"
SESSION_UNITS = 5
FRAME_UNITS = (0, 1, 2)  # units 0-2 carry a camera frame (OMNI), units 3-4 audio only
FORCE_LISTEN_COUNT = 1  # the first unit's decision is forced to <|listen|>
MAX_NEW_SPEAK_TOKENS_PER_CHUNK = 20


# The steered session: the same inputs, with these biases added to the logits the
# official decode is given at (unit, step j), so that the random tiny model walks every
# branch of the unit loop: it listens by itself (unit 1); it speaks, says <|listen|> while
# its turn is open (rewritten to <|tts_bos|>), ends its turn and listens (unit 2); it ends
# a unit with its own <|chunk_eos|> (unit 3); its turn goes on into unit 4, which runs
# to the forced <|chunk_eos|> at the last step.
STEER_BIAS = 50.0
STEER: dict[tuple[int, int], str] = {
    (1, 0): "<|listen|>",
    (2, 0): "<|speak|>",
    (2, 4): "<|listen|>",
    (2, 7): "<|turn_eos|>",
    (2, 8): "<|listen|>",
    (3, 0): "<|speak|>",
    (3, 3): "<|chunk_eos|>",
}


def steer(unit: int, step: int) -> dict[str, float]:
    """Token -> bias added to the raw logits before the decode at (unit, step)."""
    token = STEER.get((unit, step))
    return {token: STEER_BIAS} if token else {}


def frame(index: int, width: int = 448, height: int = 448) -> np.ndarray:
    """An RGB uint8 frame [height, width, 3] of gradients and a moving checker."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    r = (x * 3 + y * 5 + 40 * index) % 256
    g = ((x // 16 + y // 16 + index) % 2) * 160 + (y * 7) % 96
    b = (x * y // 64 + 23 * index) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def _tones(seconds: float, base: float, seed: int) -> np.ndarray:
    """Speech-like test audio: gliding harmonics, syllable-rate amplitude, a pause."""
    t = np.arange(round(seconds * SAMPLE_RATE), dtype=np.float64) / SAMPLE_RATE
    pitch = base * (1.0 + 0.15 * np.sin(2 * np.pi * 0.7 * t + seed))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3, 5))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + seed) ** 2
    envelope = np.where((t % 2.5) > 2.1, 0.05, envelope)  # a short pause every 2.5 s
    wave = 0.2 * voice * envelope
    return np.round(wave * 32767).astype(np.int16).astype(np.float32) / 32768


def audio(seconds: float = SESSION_UNITS) -> np.ndarray:
    """The user's microphone signal at 16 kHz (float32), fed 1 s per unit."""
    return _tones(seconds, base=140.0, seed=1)


def ref_audio(seconds: float = 1.6) -> np.ndarray:
    """The reference voice of the system prompt at 16 kHz (float32)."""
    return _tones(seconds, base=210.0, seed=2)


def session_unit(index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit `index` of the scripted session: its 1 s of audio and its frame or None."""
    pcm = audio()[index * UNIT_SAMPLES:(index + 1) * UNIT_SAMPLES]
    return pcm, (frame(index) if index in FRAME_UNITS else None)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
