"""What a scenario adds around the user's voice: background noise and a camera scene.

Noise is made deterministically from the scenario's seed, at a given RMS level, as a
loop of LOOP_SECONDS tiled over the run (a 10-minute session needs no 10 minutes of
fresh noise). The scene source is a camera double: it draws frames (simple moving
shapes, or a real photograph seen through a slowly drifting hand-held camera) and
pushes them into the session's timeline at the scenario's frame rate, in real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.bench.duplex_scenario import Noise
from app.bench.speech_cache import RATE as SPEECH_RATE
from app.bench.speech_cache import SpeechCache, Voice

LOOP_SECONDS = 20.0
_BABBLE = (
    "The meeting was moved to Thursday afternoon because the room was booked.",
    "I think the train leaves at half past seven, but we should check again.",
    "She bought three kinds of bread and forgot the butter at the counter.",
    "Did you see the game last night, the last minute was unbelievable.",
)


def _at_level(x: np.ndarray, level_db: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1.0
    return (x * (10 ** (level_db / 20) / rms)).astype(np.float32)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def _hum(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 6))


def _babble(n: int, rate: int, rng: np.random.Generator, speech: SpeechCache) -> np.ndarray:
    """Four far-off talkers at once: speech-like noise that voice activity may mistake."""
    from app.bench.duplex_user import resample

    mix = np.zeros(n, dtype=np.float64)
    voices = (Voice("en-us", 150, 40), Voice("en-gb", 170, 60), Voice("en-us", 190, 70),
              Voice("en-gb", 140, 30))
    for text, voice in zip(_BABBLE, voices, strict=True):
        talk = resample(speech.speak(text, voice), SPEECH_RATE, rate)
        talk = np.concatenate([talk, np.zeros(round(0.3 * rate), np.float32)])
        reps = np.tile(talk, n // len(talk) + 2)
        offset = int(rng.integers(0, len(talk)))
        mix += reps[offset : offset + n]
    return mix


def noise_loop(noise: Noise, rate: int, speech: SpeechCache) -> np.ndarray:
    n = round(LOOP_SECONDS * rate)
    rng = np.random.default_rng(noise.seed)
    if noise.kind == "white":
        x = rng.standard_normal(n)
    elif noise.kind == "pink":
        x = _pink(n, rng)
    elif noise.kind == "hum":
        x = _hum(n, rate)
    elif noise.kind == "babble":
        x = _babble(n, rate, rng, speech)
    else:
        raise ValueError(f"unknown noise kind {noise.kind!r}")
    return _at_level(np.asarray(x, dtype=np.float64), noise.level_db)


def noise_track(noise: Noise, rate: int, seconds: float, speech: SpeechCache) -> np.ndarray:
    loop = noise_loop(noise, rate, speech)
    n = round(seconds * rate)
    return np.tile(loop, n // len(loop) + 1)[:n]


def draw_scene(scene: str, t: float, width: int = 320, height: int = 240) -> np.ndarray:
    """One H×W×3 uint8 frame of a generated scene at time `t` (seconds)."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    if scene == "desk":
        frame[:] = (182, 150, 110)  # a wooden desk
        x = int((width - 60) * (0.5 + 0.5 * np.sin(t * 0.8)))
        frame[90:150, x : x + 60] = (230, 230, 235)  # a mug sliding across
        frame[30:70, 20:120] = (40, 60, 160)  # a book
    elif scene == "street":
        frame[: height // 2] = (135, 180, 230)  # sky
        frame[height // 2 :] = (90, 90, 90)  # road
        x = int(t * 80) % (width + 80) - 80
        lo, hi = max(0, x), min(width, x + 80)
        if hi > lo:
            frame[height // 2 - 30 : height // 2 + 10, lo:hi] = (200, 30, 30)  # a car
    else:
        raise ValueError(f"unknown scene {scene!r}")
    return frame


class HandheldPhoto:
    """A still photograph as a hand-held camera films it: a `width`x`height` view that
    drifts a few pixels each way, so consecutive frames differ as a real camera's do."""

    DRIFT = 12  # pixels the view wanders each way

    def __init__(self, path: Path, width: int = 320, height: int = 240) -> None:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path} is not an image opencv can read")
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        # Cover the view plus the drift, keeping the photograph's proportions.
        scale = max((width + 2 * self.DRIFT) / w, (height + 2 * self.DRIFT) / h)
        size = (max(width + 2 * self.DRIFT, round(w * scale)),
                max(height + 2 * self.DRIFT, round(h * scale)))
        self._image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        self.width, self.height = width, height

    def __call__(self, t: float) -> np.ndarray:
        h, w = self._image.shape[:2]
        x0 = (w - self.width) // 2 + round(self.DRIFT * 0.8 * np.sin(0.9 * t))
        y0 = (h - self.height) // 2 + round(self.DRIFT * 0.8 * np.sin(0.6 * t + 1.0))
        return self._image[y0 : y0 + self.height, x0 : x0 + self.width].copy()


class SceneSource:
    """A camera double: frames pushed at `fps`, in real time.

    `scene` is a generated scene's name (draw_scene) or anything that draws the frame
    at a time, such as a HandheldPhoto.
    """

    def __init__(self, sink, scene: str | Callable[[float], np.ndarray], fps: float) -> None:
        self._sink = sink
        self.scene = scene
        self._draw = scene if callable(scene) else (lambda t: draw_scene(scene, t))
        self.period = 1.0 / fps
        self.frames = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scene", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> bool:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s if timeout_s is not None else 2.0)
        return self._thread is None or not self._thread.is_alive()

    def _run(self) -> None:
        origin = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            self._sink.push_frame(self._draw(now - origin), now)
            self.frames += 1
            next_at = origin + self.frames * self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
