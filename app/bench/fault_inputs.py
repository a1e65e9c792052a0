"""The files the fault rows feed the app: good speech and video, and damaged versions.

Made once per run into the run's media folder. The user's voice is espeak-ng speech
(the duplex benchmark's cache): one question, then a long silence, so a file replayed
in a loop asks again only after the tiny model has had time to answer.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

QUESTION = "Hello, what can you see?"
RATE = 16000
LEAD_SECONDS = 0.3  # silence before the question
TAIL_SECONDS = 20.0  # silence after it: time for an answer before the file loops


@dataclass(frozen=True)
class Media:
    """Paths of every prepared input (see `prepare`)."""

    folder: Path

    def __getattr__(self, name: str) -> Path:  # media.speech_wav -> folder/speech.wav
        try:
            return self.folder / _FILES[name]
        except KeyError:
            raise AttributeError(f"no prepared input called {name!r}") from None

    @property
    def question_seconds(self) -> float:
        return soundfile.info(str(self.speech_wav)).duration - TAIL_SECONDS


_FILES = {
    "speech_wav": "speech.wav",
    "speech_8k": "speech-8k.wav",
    "speech_6ch": "speech-6ch.wav",
    "speech_nan": "speech-nan.wav",
    "speech_inf": "speech-inf.wav",
    "mic_not_media": "notes.wav",
    "mic_empty": "empty.wav",
    "mic_zero_frames": "zero-frames.wav",
    "video": "scene.avi",
    "camera_not_media": "notes.mp4",
    "camera_empty": "empty.mp4",
    "camera_zero_frames": "zero-frames.avi",
    "voice_good": "voice.wav",
}


def _question(speech_cache: object | None = None) -> np.ndarray:
    from app.bench.speech_cache import SpeechCache

    cache = speech_cache or SpeechCache()
    return cache.speak(QUESTION)  # type: ignore[attr-defined]


def _with_silence(voice: np.ndarray, rate: int) -> np.ndarray:
    lead = np.zeros(int(LEAD_SECONDS * rate), np.float32)
    tail = np.zeros(int(TAIL_SECONDS * rate), np.float32)
    return np.concatenate([lead, voice.astype(np.float32), tail])


def _video(path: Path, frames: int, fps: float = 10.0) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
    if not writer.isOpened():
        raise RuntimeError(f"opencv cannot write {path}")
    for i in range(frames):
        image = np.zeros((120, 160, 3), np.uint8)
        image[:, :, 1] = 60
        x = (i * 7) % 140
        image[40:80, x : x + 20] = (40, 40, 230)
        writer.write(image)
    writer.release()


def prepare(folder: Path) -> Media:
    """Write every input into `folder` (skipped when already there) and return them."""
    folder.mkdir(parents=True, exist_ok=True)
    media = Media(folder)
    done = folder / ".complete"
    if done.exists():
        return media
    voice = _question()
    speech = _with_silence(voice, RATE)
    soundfile.write(media.speech_wav, speech, RATE, subtype="PCM_16")
    # 8 kHz: the same speech at a telephone's rate.
    from app.flow.resample import StreamResampler

    down = StreamResampler(RATE, 8000)
    low = np.concatenate([down.process(speech), down.flush()])
    soundfile.write(media.speech_8k, low, 8000, subtype="PCM_16")
    # Six channels (a 5.1 interface): the voice on the front left and centre only.
    six = np.zeros((len(speech), 6), np.float32)
    six[:, 0] = speech
    six[:, 2] = 0.5 * speech
    soundfile.write(media.speech_6ch, six, RATE, subtype="PCM_16")
    # Float WAVs whose speech is broken by runs of NaN or inf (a bad driver, a bad edit).
    for target, bad in ((media.speech_nan, np.nan), (media.speech_inf, np.inf)):
        damaged = speech.copy()
        start = int((LEAD_SECONDS + 0.5) * RATE)
        for k in range(6):
            at = start + k * int(0.25 * RATE)
            damaged[at : at + 400] = bad if k % 2 == 0 else -bad
        soundfile.write(target, damaged, RATE, subtype="FLOAT")
    media.mic_not_media.write_text("meeting notes: buy milk\n", encoding="utf-8")
    media.camera_not_media.write_text("not a video at all\n", encoding="utf-8")
    media.mic_empty.write_bytes(b"")
    media.camera_empty.write_bytes(b"")
    soundfile.write(media.mic_zero_frames, np.zeros(0, np.float32), RATE, subtype="PCM_16")
    _video(media.video, frames=40)
    _video(media.camera_zero_frames, frames=0)
    # A short reference voice for personas.
    soundfile.write(media.voice_good, voice[: 3 * RATE], RATE, subtype="PCM_16")
    done.write_text("ok\n")
    return media


# ----------------------------------------------------------------------- user files
def write_settings(config: Path, data: dict | bytes | str) -> Path:
    """settings.json in `config` holding `data` (a dict as JSON; bytes/str as they are)."""
    config.mkdir(parents=True, exist_ok=True)
    path = config / "settings.json"
    if isinstance(data, dict):
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    elif isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def base_settings(model: Path, *, record: bool = True) -> dict:
    """Settings of a user who finished the first run with the tiny model, files as
    devices, and recording on."""
    return {
        "version": 1,
        "persona": "friendly-assistant",
        "model": {"family": "qwen2.5-omni", "local_dir": str(model), "quant": "bf16",
                  "device": "cpu"},
        "devices": {"camera_on": False, "speaker": "null"},
        "conversation": {"record": record},
        "first_run_done": True,
    }


def write_persona(config: Path, persona_id: str, data: dict | bytes) -> Path:
    folder = config / "personas"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{persona_id}.json"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def random_bytes(n: int = 700, seed: int = 17) -> bytes:
    """Bytes that are neither UTF-8 nor JSON (a disk error, a bad sync)."""
    data = bytearray(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))
    data[0] = 0xFF  # never valid as the first byte of UTF-8
    return bytes(data)


# ----------------------------------------------------------------------- model folders
def model_copy(tiny: Path, folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(tiny, folder)
    return folder


def truncate_weights(folder: Path, keep: float = 0.5) -> Path:
    """Cut every weights file to `keep` of its length (a download that stopped)."""
    for weights in folder.glob("*.safetensors"):
        size = weights.stat().st_size
        with open(weights, "r+b") as handle:
            handle.truncate(int(size * keep))
    return folder


def unknown_family(folder: Path) -> Path:
    """A small checkpoint of a family the app does not drive (a Llama text model)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 256}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(os.urandom(2048))
    return folder
