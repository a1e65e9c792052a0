"""Tiny random-weight model folders, built once per test session.

Use from any test module (pytest puts tests/ on sys.path):

    import tiny_models

    qwen_tiny_factory = tiny_models.qwen_tiny_factory  # a module attribute is a fixture

    def test_x(qwen_tiny_factory):
        folder = qwen_tiny_factory(min_answer_tokens=8)

Each distinct set of arguments is built once into the session's temp dir and shared.
Helpers below make units and loaded backends for the Qwen tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.model.contract import ModelSource, Persona, Quant, Unit, VideoFrame, Voice


@pytest.fixture(scope="session")
def qwen_tiny_factory(tmp_path_factory) -> Callable[..., Path]:
    """Returns build(min_answer_tokens=8, seed=0) -> folder of a tiny Qwen2.5-Omni."""
    from app.model.qwen_omni.tiny import build_tiny

    built: dict[tuple[int, int], Path] = {}

    def build(min_answer_tokens: int = 8, seed: int = 0) -> Path:
        key = (min_answer_tokens, seed)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"qwen_tiny_{min_answer_tokens}_{seed}")
            built[key] = build_tiny(folder, min_answer_tokens=min_answer_tokens, seed=seed)
        return built[key]

    return build


@pytest.fixture(scope="session")
def qwen_tiny(qwen_tiny_factory) -> Path:
    """The default tiny Qwen2.5-Omni folder (answers of at least 8 tokens)."""
    return qwen_tiny_factory()


@pytest.fixture(scope="session")
def moshi_tiny_factory(tmp_path_factory) -> Callable[..., Path]:
    """Returns build(seed=0, layout="transformers", delays=None) -> folder of a tiny Moshi.

    layout "moshi" writes the same weights in the moshi package's layout (PersonaPlex's).
    """
    from app.model.moshi.tiny import STANDARD_DELAYS, build_tiny, build_tiny_moshi_format

    built: dict[tuple, Path] = {}

    def build(seed: int = 0, layout: str = "transformers",
              delays: tuple[int, ...] | None = None) -> Path:
        delays = tuple(delays or STANDARD_DELAYS)
        key = (seed, layout, delays)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"moshi_tiny_{layout}_{seed}")
            if layout == "moshi":
                built[key] = build_tiny_moshi_format(folder, seed=seed, delays=delays)
            else:
                built[key] = build_tiny(folder, seed=seed, delays=delays)
        return built[key]

    return build


def make_unit(index: int, *, image: bool = True, seed: int = 0, seconds: float = 1.0) -> Unit:
    rng = np.random.default_rng(seed * 1000 + index)
    audio = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    frames = ()
    if image:
        pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        frames = (VideoFrame(pixels=pixels, t=float(index), seq=index),)
    return Unit(index, float(index), seconds, 16000, audio, frames)


# The tiny-model tests compare logits and waveforms within 1e-4: they hold in float32,
# which the loader uses on the CPU (bf16 on a GPU would miss them). They run on the CPU
# wherever they run, a CUDA machine included; the GPU checks run on CUDA on purpose.
TEST_DEVICE = "cpu"


def loaded_backend(folder: Path, quant: Quant = Quant.BF16, **kwargs):
    import torch

    from app.model.qwen_omni.backend import QwenOmniBackend

    kwargs.setdefault("device", TEST_DEVICE)
    backend = QwenOmniBackend(**kwargs)
    backend.load(ModelSource(local_dir=folder), quant, lambda what, frac: None)
    if kwargs["device"] == TEST_DEVICE:
        assert backend._loaded.dtype is torch.float32, backend._loaded.dtype
    return backend


def started_backend(folder: Path, voice: str = "Chelsie", quant: Quant = Quant.BF16, **kwargs):
    backend = loaded_backend(folder, quant, **kwargs)
    backend.start(Persona("test", "Answer briefly.", voice=Voice(builtin=voice)))
    return backend
