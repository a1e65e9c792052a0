"""Short audio jobs for the settings dialog: record a reference voice, play it back, play
a test tone, and meter a microphone. Each runs on a task thread and goes through
`load_sounddevice()`, so a machine without PortAudio or without devices gets a sentence
saying so instead of a crash.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from app.capture import devices, portaudio

REFERENCE_SECONDS = 10.0
REFERENCE_RATE = 16000
TONE_HZ = 440.0


class AudioToolError(Exception):
    """Something the user must fix (no device, no PortAudio); the message says what."""


def _sounddevice():
    try:
        return portaudio.load_sounddevice()
    except portaudio.AudioUnavailable as exc:
        raise AudioToolError(str(exc)) from exc


def _input_device(spec: int | str | None):
    found = devices.list_audio_devices()
    if not found.inputs:
        raise AudioToolError(
            "no microphone found on this computer"
            + (f" ({found.reason})" if found.reason else "")
            + ": connect one, or pick an existing recording with Choose file…"
        )
    try:
        return devices.resolve_input_device(spec)
    except Exception as exc:
        raise AudioToolError(str(exc)) from exc


def record_reference(
    path: Path,
    progress: Callable[[str, float], None],
    cancel: threading.Event,
    *,
    device: int | str | None = None,
    seconds: float = REFERENCE_SECONDS,
) -> Path:
    """Record `seconds` of the user's voice to a 16 kHz mono WAV; stops early on cancel."""
    info = _input_device(device)
    sd = _sounddevice()
    rate = int(info.rate) or REFERENCE_RATE
    chunks: list[np.ndarray] = []
    lock = threading.Lock()

    def callback(indata, frames, _time, _status) -> None:
        with lock:
            chunks.append(indata[:, 0].copy())

    try:
        with sd.InputStream(device=info.index, channels=1, samplerate=rate, dtype="float32",
                            callback=callback):
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                if cancel.is_set():
                    raise AudioToolError("recording stopped")
                progress("recording", elapsed / seconds)
                time.sleep(0.1)
    except AudioToolError:
        raise
    except Exception as exc:
        raise AudioToolError(f"the microphone could not be recorded ({exc})") from exc
    with lock:
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if len(audio) < rate:
        raise AudioToolError("the recording is shorter than a second; try again")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype="PCM_16")
    progress("recorded", 1.0)
    return path


def play_file(path: Path, progress: Callable[[str, float], None], cancel: threading.Event,
              *, device: int | str | None = None) -> None:
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioToolError(f"{path.name} cannot be read as audio ({exc})") from exc
    _play(audio[:, 0], rate, progress, cancel, device)


def play_tone(progress: Callable[[str, float], None], cancel: threading.Event,
              *, device: int | str | None = None, seconds: float = 1.0) -> None:
    rate = 48000
    t = np.arange(int(seconds * rate)) / rate
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.05)  # no clicks
    _play((0.2 * np.sin(2 * np.pi * TONE_HZ * t) * fade).astype(np.float32), rate, progress,
          cancel, device)


def _play(audio: np.ndarray, rate: int, progress: Callable[[str, float], None],
          cancel: threading.Event, device: int | str | None) -> None:
    if device == "null":
        raise AudioToolError("the speaker is set to 'null' (plays nowhere); pick a device")
    found = devices.list_audio_devices()
    if not found.outputs:
        raise AudioToolError("no speaker found on this computer"
                             + (f" ({found.reason})" if found.reason else ""))
    sd = _sounddevice()
    try:
        sd.play(audio, rate, device=device)
        duration = len(audio) / rate
        started = time.monotonic()
        while time.monotonic() - started < duration:
            if cancel.is_set():
                break
            progress("playing", (time.monotonic() - started) / duration)
            time.sleep(0.05)
        sd.stop()
    except Exception as exc:
        raise AudioToolError(f"the speaker could not play ({exc})") from exc


def dbfs(samples: np.ndarray) -> float:
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(-120.0, 20.0 * float(np.log10(rms + 1e-12)))


class LevelSink:
    """An AudioSink (and FrameSink) for device tests: keeps the last level, drops the rest."""

    def __init__(self) -> None:
        self.level_db = -120.0
        self.blocks = 0
        self.frames = 0

    def push_audio(self, samples: np.ndarray, sample_rate: int,
                   capture_time: float | None = None) -> None:
        self.level_db = dbfs(np.asarray(samples, dtype=np.float32).reshape(-1))
        self.blocks += 1

    def push_frame(self, pixels: np.ndarray, capture_time: float) -> None:
        self.frames += 1
