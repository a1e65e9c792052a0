"""Mimi, one 80 ms frame at a time, in both directions.

Encoding streams through transformers' own support (`use_streaming=True` with the
returned padding and transformer caches); it equals encoding the whole recording.

Decoding needs more than the decoder transformer's KV cache, which is all
transformers keeps between `decode` calls (checked: per-frame decode with that cache
differs from whole-stream decode). Two other kinds of state live in the SEANet decoder
and the upsampler, and whole-stream decoding differs from per-frame decoding until both
are carried across frames:

* causal convolutions left-pad every call with zeros, so each call needs the last
  `kernel - stride` input samples of the previous call instead of the zeros;
* transposed convolutions (the upsampler and each SEANet stage) write
  `kernel - stride` samples past the end of each call that overlap the next call's
  first samples; whole-stream decoding adds them up (overlap-add), and trims that many
  samples only at the very end of the stream.

`StreamingDecoder` carries both (the conv histories and the overlap tails, minus the
bias, which the next call adds once itself), so each frame's 1920 samples are final
when returned and the concatenation equals `mimi.decode` of the whole code stream.
"""

from __future__ import annotations

import torch
from torch import nn

FRAME_SAMPLES = 1920  # 80 ms at 24 kHz: one Mimi frame


class StreamingEncoder:
    """User audio frames → 8 codebooks per frame, with Mimi's streaming caches."""

    def __init__(self, mimi: nn.Module, num_codebooks: int) -> None:
        self.mimi = mimi
        self.num_codebooks = num_codebooks
        self.reset()

    def reset(self) -> None:
        self._encoder_cache = None
        self._padding_cache = None

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(samples,) or (1, 1, samples), a whole number of frames → (1, K, frames)."""
        param = next(self.mimi.parameters())
        wave = audio.reshape(1, 1, -1).to(device=param.device, dtype=param.dtype)
        if wave.shape[-1] % FRAME_SAMPLES:
            raise ValueError(f"audio must be whole {FRAME_SAMPLES}-sample frames")
        out = self.mimi.encode(
            wave,
            num_quantizers=self.num_codebooks,
            encoder_cache=self._encoder_cache,
            padding_cache=self._padding_cache,
            use_streaming=True,
        )
        self._encoder_cache = out.encoder_cache
        self._padding_cache = out.padding_cache
        return out.audio_codes


class StreamingDecoder:
    """Codes → waveform, frame by frame, equal to decoding the whole stream at once."""

    def __init__(self, mimi: nn.Module) -> None:
        from transformers.models.mimi.modeling_mimi import (
            MimiConv1d,
            MimiConvTranspose1d,
            MimiResnetBlock,
        )

        self._conv_type, self._convtr_type, self._res_type = (
            MimiConv1d, MimiConvTranspose1d, MimiResnetBlock)
        self.mimi = mimi
        for module in mimi.decoder.modules():
            if isinstance(module, MimiConvTranspose1d) and module.padding_left != 0:
                raise ValueError("streaming decode needs causal transposed convolutions "
                                 "trimmed on the right (Mimi's trim_right_ratio 1.0)")
            if isinstance(module, MimiConv1d) and (
                not module.causal or module.pad_mode != "constant" or int(module.stride) != 1
            ):
                raise ValueError("streaming decode needs causal, zero-padded, stride-1 "
                                 "decoder convolutions (Mimi's)")
        self.reset()

    def reset(self) -> None:
        self._history: dict[int, torch.Tensor] = {}  # causal conv: last inputs
        self._tails: dict[int, torch.Tensor] = {}  # transposed conv: overlap, no bias
        self._cache = None  # decoder transformer KV cache
        self.frames = 0

    # --- the layers ------------------------------------------------------------------

    def _conv(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        pad = int(layer.padding_total)
        if pad == 0:
            return layer.conv(x)
        past = self._history.get(id(layer))
        if past is None:
            past = x.new_zeros(x.shape[0], x.shape[1], pad)  # what whole decode pads with
        full = torch.cat([past, x], dim=-1)
        self._history[id(layer)] = full[..., -pad:]
        return layer.conv(full)

    def _convtr(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = layer.conv(x)
        stride = layer.conv.stride[0]
        ready = x.shape[-1] * stride
        tail = self._tails.get(id(layer))
        if tail is not None:
            y = torch.cat([y[..., : tail.shape[-1]] + tail, y[..., tail.shape[-1]:]], dim=-1)
        rest = y[..., ready:]
        if layer.conv.bias is not None:
            rest = rest - layer.conv.bias.view(1, -1, 1)
        self._tails[id(layer)] = rest
        return y[..., :ready]

    def _run(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, self._conv_type):
            return self._conv(layer, x)
        if isinstance(layer, self._convtr_type):
            return self._convtr(layer, x)
        if isinstance(layer, self._res_type):
            h = x
            for inner in layer.block:
                h = self._run(inner, h)
            return self._run(layer.shortcut, x) + h
        return layer(x)  # ELU, Identity: no state

    # --- decoding ----------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(1, K, frames) codes → (1, 1, frames · 1920) waveform, final."""
        decoder = self.mimi.decoder
        h = self.mimi.quantizer.decode(codes.to(next(self.mimi.parameters()).device))
        if decoder.upsample is not None:
            h = self._convtr(decoder.upsample, h)
        out = decoder.decoder_transformer(h.transpose(1, 2), cache=self._cache, use_cache=True)
        self._cache = out.cache
        h = out.last_hidden_state.transpose(1, 2)
        for layer in decoder.decoder_seanet.layers:
            h = self._run(layer, h)
        self.frames += codes.shape[-1]
        return h
