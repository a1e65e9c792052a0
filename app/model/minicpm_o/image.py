"""A camera frame made into the vision tower's input, as the official duplex code does.

Duplex frames are never sliced: the whole frame is resized so that its area is about
448² pixels (aspect ratio kept, each side a multiple of the 14-pixel patch, upscaling
allowed), with PIL's bicubic filter, scaled to [-1, 1] (mean 0.5, std 0.5), and cut into
14×14 patches laid side by side in one 14-pixel-high strip: the layout the NaViT patch
convolution reads, one patch after another in row-major order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

MEAN = 0.5  # the published preprocessor's norm_mean (every channel)
STD = 0.5  # and norm_std


@dataclass(frozen=True)
class FramePatches:
    pixels: torch.Tensor  # [1, 3, patch, n * patch] float32, n = grid[0] * grid[1]
    grid: tuple[int, int]  # patches (rows, columns)


def _multiple_of(length: float, patch: int) -> int:
    return max(round(length / patch) * patch, patch)


def resized_size(width: int, height: int, scale_resolution: int, patch: int) -> tuple[int, int]:
    """(width, height) of the unsliced frame: area about scale_resolution², upscaled too."""
    ratio = width / height
    new_height = int(scale_resolution / math.sqrt(ratio))
    new_width = int(new_height * ratio)
    return _multiple_of(new_width, patch), _multiple_of(new_height, patch)


def frame_patches(rgb: np.ndarray, *, scale_resolution: int, patch: int) -> FramePatches:
    """`rgb` (H, W, 3) uint8 as the vision tower's patch strip and its patch grid."""
    from PIL import Image

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"a frame must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    size = resized_size(image.width, image.height, scale_resolution, patch)
    if size != image.size:
        image = image.resize(size, resample=Image.Resampling.BICUBIC)
    pixels = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    chw = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    rows, cols = chw.shape[1] // patch, chw.shape[2] // patch
    # [3*p*p, n] columns of patches -> [3, p, n*p]: patch k fills columns k*p .. k*p+p-1.
    cut = torch.nn.functional.unfold(chw, (patch, patch), stride=(patch, patch))
    strip = cut.reshape(3, patch, patch, -1).permute(0, 1, 3, 2).reshape(3, patch, -1)
    return FramePatches(pixels=strip.unsqueeze(0), grid=(rows, cols))
