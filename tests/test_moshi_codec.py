"""Streaming Mimi on the tiny model: frame-by-frame encode/decode equal whole-stream."""

from __future__ import annotations

import pytest
import torch

from app.model.moshi import tiny
from app.model.moshi.codec import FRAME_SAMPLES, StreamingDecoder, StreamingEncoder


@pytest.fixture(scope="module")
def mimi():
    return tiny._tiny_model(0).audio_encoder


def test_streaming_encode_equals_whole_encode(mimi) -> None:
    gen = torch.Generator().manual_seed(1)
    frames = 20
    audio = 0.1 * torch.randn(frames * FRAME_SAMPLES, generator=gen)
    with torch.no_grad():
        whole = mimi.encode(audio.view(1, 1, -1), num_quantizers=8).audio_codes
    enc = StreamingEncoder(mimi, 8)
    parts = [enc.encode(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) for i in range(frames)]
    streamed = torch.cat(parts, dim=-1)
    assert streamed.shape == (1, 8, frames)
    assert torch.equal(streamed, whole)


def test_encoder_refuses_partial_frames(mimi) -> None:
    with pytest.raises(ValueError, match="1920"):
        StreamingEncoder(mimi, 8).encode(torch.zeros(1000))


@pytest.mark.parametrize("frames", [6, 140])  # 140 frames = 280 decoder steps > its window 250
def test_streaming_decode_equals_whole_decode(mimi, frames: int) -> None:
    gen = torch.Generator().manual_seed(frames)
    codes = torch.randint(0, tiny.TINY_CARD, (1, 8, frames), generator=gen)
    with torch.no_grad():
        whole = mimi.decode(codes).audio_values
    dec = StreamingDecoder(mimi)
    streamed = torch.cat([dec.decode(codes[..., i:i + 1]) for i in range(frames)], dim=-1)
    assert streamed.shape == whole.shape == (1, 1, frames * FRAME_SAMPLES)
    assert float((streamed - whole).abs().max()) < 1e-5
    assert float(whole.abs().max()) > 1e-2  # not trivially equal silence


def test_decoder_cache_alone_is_not_enough(mimi) -> None:
    """The reason StreamingDecoder exists: transformers' decode with only its KV cache
    gives a different waveform (checked); this guards against that fact changing."""
    codes = torch.randint(0, tiny.TINY_CARD, (1, 8, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = mimi.decode(codes).audio_values
        cache = None
        parts = []
        for i in range(4):
            out = mimi.decode(codes[..., i:i + 1], decoder_cache=cache, use_cache=True)
            cache = out.decoder_cache
            parts.append(out.audio_values)
    assert float((torch.cat(parts, -1) - whole).abs().max()) > 1e-3


def test_decoder_reset_starts_a_new_stream(mimi) -> None:
    codes = torch.randint(0, tiny.TINY_CARD, (1, 8, 3), generator=torch.Generator().manual_seed(4))
    dec = StreamingDecoder(mimi)
    first = torch.cat([dec.decode(codes[..., i:i + 1]) for i in range(3)], -1)
    dec.reset()
    second = torch.cat([dec.decode(codes[..., i:i + 1]) for i in range(3)], -1)
    assert torch.allclose(first, second, atol=1e-6)
