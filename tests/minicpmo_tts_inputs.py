"""The scripted duplex session the speech decoder's goldens were recorded on.

scripts/minicpmo_tts_reference.py runs OpenBMB's MiniCPMODuplex (speech on) over it and
tests/test_minicpmo_tts.py runs Duetto's backend and speech stream over the same. The
audio and the reference voice are tests/minicpmo_inputs.py's generated signals; no
camera frames (the speech path does not depend on them).

The steer (biases added to the raw LLM logits at (unit, step j), a test instrument)
makes the random tiny model hold two turns, so that the speech decoder walks each of
its cases: a turn's first unit (the end code allowed), units in the middle of a turn
(its cache carried, exactly 25 codes), a turn ended by <|turn_eos|> then the model's
own <|chunk_eos|> (the end code allowed, the cache dropped), listening units (no
speech), a second turn from a fresh cache, and a unit with no words after its first
step (the condition is the audio-BOS position alone).

The random tiny decoder never draws the end code by itself, so a second instrument,
`EndCodeSteer` (a forward hook on the code head, the same on both sides), raises the end
code's logit at (unit, step) of TTS_STEER: a turn's first unit stops early, a unit
mid-turn must not (the end code is forbidden there), a turn's last unit stops early,
and a turn's first unit stops at its first step (no codes; the cache holds the
condition alone, and the next unit goes on from it).
"""

from __future__ import annotations

import numpy as np

from tests import minicpmo_inputs as inputs

SAMPLE_RATE = inputs.SAMPLE_RATE
UNITS = 9
FORCE_LISTEN_COUNT = 1
MAX_NEW_SPEAK_TOKENS_PER_CHUNK = 20
SAMPLED_SEED = 1234  # the sampled run: torch's generator seeded so before the first unit
STEER_BIAS = 50.0
STEER: dict[tuple[int, int], str] = {
    (1, 0): "<|speak|>",       # turn 1 opens; words to the unit's token limit
    (3, 5): "<|turn_eos|>",    # unit 3: turn 1 ends ...
    (3, 6): "<|chunk_eos|>",   # ... and the unit with the model's own chunk end
    (4, 0): "<|listen|>",
    (5, 0): "<|speak|>",       # turn 2 opens
    (5, 1): "<|chunk_eos|>",   # with no words after its first step
    (6, 9): "<|chunk_eos|>",
    (7, 3): "<|turn_eos|>",
    (7, 4): "<|chunk_eos|>",
    (8, 0): "<|listen|>",
}


# (unit, TTS step) -> bias on the end code's logit, in the greedy run only.
TTS_STEER_BIAS = 100.0
TTS_STEER: dict[tuple[int, int], float] = {
    (1, 10): TTS_STEER_BIAS,   # a turn's first unit: stops after 10 codes
    (2, 5): TTS_STEER_BIAS,    # mid-turn: the end code is forbidden, 25 codes anyway
    (3, 12): TTS_STEER_BIAS,   # the turn's last unit: stops after 12 codes
    (5, 0): TTS_STEER_BIAS,    # turn 2's first unit: stops at once, no codes
}


class EndCodeSteer:
    """A forward hook on the speech decoder's code head (`head_code[0]`, one call per
    generation step in both implementations) adding TTS_STEER's bias to the end code's
    logit at step `calls` of the unit set by `begin`."""

    def __init__(self, head, end_code: int) -> None:
        self.end_code, self.unit, self.calls = end_code, -1, 0
        self.handle = head.register_forward_hook(self)

    def begin(self, unit: int) -> None:
        self.unit, self.calls = unit, 0

    def __call__(self, module, args, output):
        bias = TTS_STEER.get((self.unit, self.calls))
        self.calls += 1
        if not bias:
            return None
        output = output.clone()
        output[..., self.end_code] += bias
        return output


def steer(unit: int, step: int) -> dict[str, float]:
    """Token -> bias added to the raw logits before the decode at (unit, step)."""
    token = STEER.get((unit, step))
    return {token: STEER_BIAS} if token else {}


def unit_audio(index: int) -> np.ndarray:
    """Unit `index`'s 1 s of microphone audio at 16 kHz."""
    return inputs.audio(UNITS)[index * SAMPLE_RATE:(index + 1) * SAMPLE_RATE]


def ref_audio() -> np.ndarray:
    return inputs.ref_audio()


# --- voice prompt recordings ------------------------------------------------------------

# (file name, rate, seconds): the persona page's 16 kHz, and a 44.1 kHz file (resampled
# to 16 and 24 kHz on the way in).
VOICE_RECORDINGS = (("voice_16k.wav", 16_000, 10.0), ("voice_44k.wav", 44_100, 6.0))


def voice_recording(rate: int, seconds: float) -> np.ndarray:
    """Speech-like audio (the tiny checkpoint's own demo voice, at any rate and length)."""
    from app.model.minicpm_o.tiny import speech_like

    return speech_like(rate, seconds)


def write_voice_recordings(folder) -> list:
    """The VOICE_RECORDINGS as PCM_16 WAV files in `folder`; their paths."""
    from pathlib import Path

    import soundfile

    paths = []
    for name, rate, seconds in VOICE_RECORDINGS:
        path = Path(folder) / name
        soundfile.write(str(path), voice_recording(rate, seconds), rate, subtype="PCM_16")
        paths.append(path)
    return paths
