"""The three features a voice prompt recording is turned into, as the reference computes them.

The reference is `stepaudio2.Token2wav._prepare_prompt` (minicpmo-utils 1.0.6), which
reads the recording with torchaudio and computes, from the same file:

* for the speech tokenizer: the recording at 16 kHz, Whisper's 128-bin log-mel
  (s3tokenizer's `log_mel_spectrogram`: 400-point Hann STFT, hop 160, the last frame
  dropped, log10 floored at 1e-10 and at the clip's maximum minus 8, then (x + 4) / 4);
* for CAM++: the same 16 kHz audio as Kaldi's 80-bin log filterbank (torchaudio's
  `compliance.kaldi.fbank` with dither 0; its other defaults: 25 ms povey windows every
  10 ms, pre-emphasis 0.97, DC removal, snip_edges), minus its mean over time. torchaudio
  has no wheel for our torch, so kaldi-native-fbank computes it (the same Kaldi
  algorithm in C++; checked against torchaudio's within 1e-3 in
  tests/test_minicpmo_voice.py);
* for the flow's prompt: the recording at 24 kHz, an 80-bin log-mel (n_fft 1920, hop
  480, Hann window, reflect padding of 720 on each side and no centring, magnitude with
  1e-9 under the root, Slaney mel filters 0-8000 Hz, natural log floored at 1e-5).

The resampling is torchaudio's default (band-limited sinc interpolation, Hann window
over 6 zero crossings, roll-off 0.99), written here so that a recording at any rate gives
the reference's features.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

TOKENIZER_RATE = 16_000
MEL_RATE = 24_000

_WHISPER_FFT, _WHISPER_HOP, _WHISPER_MELS = 400, 160, 128
_PROMPT_FFT, _PROMPT_HOP, _PROMPT_MELS, _PROMPT_FMAX = 1920, 480, 80, 8000
_SINC_ZEROS, _SINC_ROLLOFF = 6, 0.99


# --- resampling ----------------------------------------------------------------------


@cache
def _sinc_kernels(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """One windowed-sinc filter per output phase: [new, 1, taps] float32, and the padding.

    Output sample j of each block of `new` lies at time j / new (in input blocks of
    `orig` samples); its filter weighs input i by sinc(pi * f * (i / orig - j / new))
    under a Hann window reaching zero at the 6th zero crossing, f the lower of the two
    rates times the roll-off."""
    cutoff = min(orig, new) * _SINC_ROLLOFF
    width = math.ceil(_SINC_ZEROS * orig / cutoff)
    taps = np.arange(-width, width + orig, dtype=np.float64) / orig
    phases = -np.arange(new, dtype=np.float64)[:, None] / new
    t = np.clip((phases + taps[None, :]) * cutoff, -_SINC_ZEROS, _SINC_ZEROS)
    window = np.cos(t * math.pi / _SINC_ZEROS / 2) ** 2
    arg = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(arg == 0, 1.0, np.sin(arg) / arg)
    kernels = sinc * window * (cutoff / orig)
    return torch.from_numpy(kernels.astype(np.float32)).unsqueeze(1), width


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """float32 mono `samples` at `rate` -> at `new_rate` (module docstring)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if rate == new_rate:
        return samples
    g = math.gcd(int(rate), int(new_rate))
    orig, new = int(rate) // g, int(new_rate) // g
    kernels, width = _sinc_kernels(orig, new)
    wave = torch.from_numpy(samples)[None, None]
    padded = torch.nn.functional.pad(wave, (width, width + orig))
    out = torch.nn.functional.conv1d(padded, kernels, stride=orig)  # [1, new, blocks]
    out = out.transpose(1, 2).reshape(-1)
    length = math.ceil(new * samples.size / orig)
    return out[:length].numpy()


# --- the speech tokenizer's log-mel ---------------------------------------------------


@cache
def _whisper_filters() -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=_WHISPER_FFT // 2 + 1,
                           num_mel_filters=_WHISPER_MELS, min_frequency=0.0,
                           max_frequency=TOKENIZER_RATE / 2, sampling_rate=TOKENIZER_RATE,
                           norm="slaney", mel_scale="slaney")
    return torch.from_numpy(np.asarray(bank.T, dtype=np.float32))  # [mels, freqs]


def tokenizer_log_mel(pcm16k: np.ndarray) -> np.ndarray:
    """[128, frames] float32: 100 frames a second of 16 kHz audio."""
    wave = torch.from_numpy(np.ascontiguousarray(pcm16k, dtype=np.float32))
    stft = torch.stft(wave, _WHISPER_FFT, _WHISPER_HOP, window=torch.hann_window(_WHISPER_FFT),
                      return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(_whisper_filters() @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


# --- CAM++'s filterbank -----------------------------------------------------------------


def speaker_fbank(pcm16k: np.ndarray) -> np.ndarray:
    """[frames, 80] float32 Kaldi log filterbank of 16 kHz audio, mean-normalised."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = TOKENIZER_RATE
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(TOKENIZER_RATE, np.ascontiguousarray(pcm16k, dtype=np.float32))
    fbank.input_finished()
    frames = fbank.num_frames_ready
    if frames == 0:
        return np.zeros((0, 80), dtype=np.float32)
    feats = np.stack([fbank.get_frame(i) for i in range(frames)]).astype(np.float32)
    return feats - feats.mean(axis=0, keepdims=True)


# --- the flow's prompt mel -------------------------------------------------------------


@cache
def _prompt_filters() -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=_PROMPT_FFT // 2 + 1, num_mel_filters=_PROMPT_MELS,
                           min_frequency=0.0, max_frequency=float(_PROMPT_FMAX),
                           sampling_rate=MEL_RATE, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(np.asarray(bank.T, dtype=np.float32))  # [80, freqs]


def prompt_mel(pcm24k: np.ndarray) -> np.ndarray:
    """[frames, 80] float32: 50 frames a second of 24 kHz audio."""
    wave = torch.from_numpy(np.ascontiguousarray(pcm24k, dtype=np.float32))[None, None]
    pad = (_PROMPT_FFT - _PROMPT_HOP) // 2
    wave = torch.nn.functional.pad(wave, (pad, pad), mode="reflect")[0]
    stft = torch.stft(wave, _PROMPT_FFT, hop_length=_PROMPT_HOP, win_length=_PROMPT_FFT,
                      window=torch.hann_window(_PROMPT_FFT), center=False, return_complex=True)
    spec = torch.view_as_real(stft)
    magnitude = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
    mel = torch.matmul(_prompt_filters(), magnitude)
    return torch.log(torch.clamp(mel, min=1e-5))[0].T.contiguous().numpy()
