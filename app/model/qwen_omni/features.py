"""Model inputs from raw unit data: log-mel audio features and image patches.

Qwen2_5OmniProcessor would do both, but it needs Pillow and a torchvision build that
matches torch. Its two halves are simple enough to drive directly: transformers'
WhisperFeatureExtractor (128 mel bins) for audio, and the Qwen2-VL patch layout
(CLIP mean/std, 14-pixel patches, 2×2 merge, 2-frame temporal patches) for images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from app.model.contract import BackendError

AUDIO_RATE = 16000
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@dataclass(frozen=True)
class AudioInput:
    features: torch.Tensor  # (1, 128, frames), in the dtype the model reads them in
    mask: torch.Tensor  # (1, frames) long, all ones
    n_tokens: int  # audio tokens the thinker will see


@dataclass(frozen=True)
class ImageInput:
    """One frame, ready for the vision encoder.

    The conversation keeps every unit it may have to prefill again after trimming, so
    the frame is kept as a JPEG (quality 95, about 30 KB; camera frames usually arrive
    JPEG-compressed anyway) and turned into float patches (about 2.4 MB: float32, and
    each frame twice for the temporal patch) only when the encoder runs. Kept as
    patches, ten minutes of context held hundreds of MB. The first prefill uses the
    decoded JPEG too, so a re-prefill after trimming sees exactly the same pixels.
    """

    jpeg: bytes  # the resized RGB frame; sides multiples of patch * merge
    grid_thw: torch.Tensor  # (1, 3) long
    n_tokens: int  # image tokens after the 2×2 merge
    patch: int = 14
    merge: int = 2
    temporal: int = 2

    def rgb(self) -> np.ndarray:
        bgr = cv2.imdecode(np.frombuffer(self.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    @property
    def pixel_values(self) -> torch.Tensor:
        """(patches, 3 * temporal * patch * patch) float32, as Qwen2-VL's processor makes."""
        resized = self.rgb()
        h, w = resized.shape[:2]
        norm = (resized.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD  # H, W, C
        chw = np.transpose(norm, (2, 0, 1))
        # One still image fills a temporal patch by repetition, as the processor does.
        frames = np.repeat(chw[None], self.temporal, axis=0)  # T, C, H, W
        p, m, t = self.patch, self.merge, self.temporal
        gh, gw = h // p, w // p
        x = frames.reshape(1, t, 3, gh // m, m, p, gw // m, m, p)
        x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        flat = x.reshape(gh * gw, 3 * t * p * p)
        return torch.from_numpy(np.ascontiguousarray(flat))


def audio_token_count(frames: int) -> int:
    """Thinker tokens for `frames` mel frames: the encoder's stride-2 conv, then 2× pooling."""
    after_conv = (frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


class AudioFeaturizer:
    """16 kHz mono float audio → the audio tower's 128-bin log-mel features."""

    def __init__(self) -> None:
        from transformers import WhisperFeatureExtractor

        self._fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=AUDIO_RATE)

    def __call__(
        self, audio: np.ndarray, sample_rate: int, dtype: torch.dtype = torch.float32
    ) -> AudioInput:
        """`dtype`: the model's own. The conversation keeps every unit's features for a
        re-prefill after trimming, and the thinker casts them to its dtype anyway, so
        keeping them in it loses nothing and halves them for a bf16 model."""
        if sample_rate != AUDIO_RATE:
            raise BackendError(
                f"Qwen2.5-Omni takes audio at {AUDIO_RATE} Hz, this unit is at {sample_rate} Hz",
                hint="resample units to the backend's spec.audio_in_rate",
            )
        wave = np.asarray(audio, dtype=np.float32).reshape(-1)
        if wave.size < 400:
            raise BackendError(
                f"a unit needs at least 25 ms of audio, got {wave.size} samples",
                hint="use a unit length of 100 ms or more",
            )
        if not np.all(np.isfinite(wave)):
            wave = np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0)
        # "longest": no padding to Whisper's 30 s window; the thinker sees only this unit.
        out = self._fe(wave, sampling_rate=AUDIO_RATE, padding="longest", return_tensors="pt")
        feats = out["input_features"].to(dtype)
        frames = feats.shape[-1]
        return AudioInput(
            features=feats,
            mask=torch.ones(1, frames, dtype=torch.long),
            n_tokens=audio_token_count(frames),
        )


class ImagePatcher:
    """RGB uint8 frame → Qwen2-VL patches, resized to at most `max_pixels`."""

    def __init__(
        self,
        *,
        patch_size: int = 14,
        merge_size: int = 2,
        temporal_patch_size: int = 2,
        max_pixels: int = 224 * 224 * 2,
        min_pixels: int = 56 * 56,
    ) -> None:
        self.patch = patch_size
        self.merge = merge_size
        self.temporal = temporal_patch_size
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """Both sides a multiple of patch*merge, area within [min_pixels, max_pixels]."""
        factor = self.patch * self.merge
        h = max(factor, round(height / factor) * factor)
        w = max(factor, round(width / factor) * factor)
        if h * w > self.max_pixels:
            scale = math.sqrt(height * width / self.max_pixels)
            h = max(factor, math.floor(height / scale / factor) * factor)
            w = max(factor, math.floor(width / scale / factor) * factor)
        elif h * w < self.min_pixels:
            scale = math.sqrt(self.min_pixels / (height * width))
            h = math.ceil(height * scale / factor) * factor
            w = math.ceil(width * scale / factor) * factor
        return h, w

    def __call__(self, pixels: np.ndarray) -> ImageInput:
        img = np.asarray(pixels)
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 2 or img.shape[1] < 2:
            raise BackendError(
                f"a video frame must be H×W×3 RGB, got shape {tuple(img.shape)}",
                hint="the camera source should deliver RGB frames",
            )
        h, w = self.target_size(img.shape[0], img.shape[1])
        resized = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        p, m = self.patch, self.merge
        gh, gw = h // p, w // p
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(resized, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        if not ok:
            raise BackendError("a video frame could not be compressed", hint="check the camera")
        return ImageInput(
            jpeg=jpeg.tobytes(),
            grid_thw=torch.tensor([[1, gh, gw]], dtype=torch.long),
            n_tokens=gh * gw // (m * m),
            patch=p,
            merge=m,
            temporal=self.temporal,
        )
