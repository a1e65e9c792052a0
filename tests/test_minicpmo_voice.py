"""The voice prompt (token2wav/voice_encoders.py, prompt_features.py) against the reference,
the tiny ONNX encoders, and the on-disk voice cache (voice_cache.py).

scripts/minicpmo_tts_reference.py voice ran minicpmo-utils 1.0.6's
`Token2wav._prepare_prompt` on generated recordings (tests/minicpmo_tts_inputs.py) with
the tiny encoders of write_tiny_voice_encoders(seed=0), its speech tokenizer run by
onnxruntime (s3tokenizer's torch port reads only the published graph), and recorded the
prompt and the features on the way (tests/data/minicpmo_goldens/voice_prompt.*).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.model.contract import BackendError
from app.model.minicpm_o.token2wav import prompt_features as pf
from app.model.minicpm_o.token2wav import voice_cache as vc
from app.model.minicpm_o.token2wav.tiny_voice import write_tiny_voice_encoders
from app.model.minicpm_o.token2wav.voice_cache import VoiceCache
from app.model.minicpm_o.token2wav.voice_encoders import (
    SPEAKER_ENCODER_FILE,
    SPEECH_TOKENIZER_FILE,
    VoiceEncoders,
    builtin_voices,
    read_recording,
)
from tests import minicpmo_tts_inputs as ti

GOLDENS = Path(__file__).parent / "data" / "minicpmo_goldens"


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDENS / "voice_prompt.json").read_text())


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "voice_prompt.safetensors"))


@pytest.fixture(scope="module")
def encoders_dir(tmp_path_factory, golden) -> Path:
    folder = write_tiny_voice_encoders(tmp_path_factory.mktemp("t2w"), seed=0)
    for name, digest in golden["encoders"]["sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, (
            f"the tiny {name} is not the one the goldens were made with: rerun "
            "scripts/minicpmo_tts_reference.py voice")
    return folder


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[Path]:
    return ti.write_voice_recordings(tmp_path_factory.mktemp("voices"))


# --- parity with 1.0.6's _prepare_prompt ------------------------------------------------------


def test_the_features_equal_the_references(tensors, recordings):
    """Resampling and the tokenizer's log-mel within float32 rounding; kaldi-native-fbank
    within 2e-3 of torchaudio's kaldi.fbank (log energies, on the same 16 kHz samples)."""
    for path in recordings:
        key = path.stem
        samples, rate = read_recording(path)
        pcm16k = pf.resample(samples, rate, pf.TOKENIZER_RATE)
        if f"{key}.audio16k" in tensors:
            assert np.abs(pcm16k - tensors[f"{key}.audio16k"].numpy()).max() < 1e-6, key
            pcm16k_ref = tensors[f"{key}.audio16k"].numpy()
        else:
            pcm16k_ref = pcm16k
        log_mel = pf.tokenizer_log_mel(pcm16k)
        assert np.abs(log_mel - tensors[f"{key}.tokenizer_log_mel"].numpy()).max() < 1e-4, key
        fbank = pf.speaker_fbank(pcm16k_ref)
        assert fbank.shape == tuple(tensors[f"{key}.speaker_fbank"].shape), key
        assert np.abs(fbank - tensors[f"{key}.speaker_fbank"].numpy()).max() < 2e-3, key


def test_the_voice_prompt_equals_the_references(tensors, recordings, encoders_dir):
    """Codes equal; the CAM++ embedding within 1e-3; the 24 kHz prompt mel within 1e-4
    wherever the reference's magnitude is above e^-7 (a 1920-point float32 STFT's
    rounding is about 1e-5, so fainter bins differ by more between two FFT libraries:
    within 1e-2 there)."""
    encoders = VoiceEncoders(encoders_dir)
    for path in recordings:
        key = path.stem
        prompt = encoders.encode_file(path)
        assert prompt.tokens.dtype == torch.int32
        assert torch.equal(prompt.tokens, tensors[f"{key}.tokens"]), key
        assert (prompt.speaker - tensors[f"{key}.speaker"]).abs().max() < 1e-3, key
        want = tensors[f"{key}.mel"]
        assert prompt.mel.shape == want.shape == (1, 2 * prompt.tokens.shape[1], 80), key
        diff = (prompt.mel - want).abs()
        assert diff[want > -7].max() < 1e-4, key
        assert diff.max() < 1e-2, key


# --- the tiny encoders ----------------------------------------------------------------------


def test_the_tiny_encoders_have_the_published_names_shapes_and_rates(tmp_path):
    import onnxruntime

    folder = write_tiny_voice_encoders(tmp_path, seed=3)
    tok = onnxruntime.InferenceSession(str(folder / SPEECH_TOKENIZER_FILE))
    assert [(i.name, i.type) for i in tok.get_inputs()] == [
        ("feats", "tensor(float)"), ("feats_length", "tensor(int32)")]
    assert tok.get_inputs()[0].shape[:2] == [1, 128]
    assert [o.name for o in tok.get_outputs()] == ["indices"]
    spk = onnxruntime.InferenceSession(str(folder / SPEAKER_ENCODER_FILE))
    assert [(i.name, i.shape[2]) for i in spk.get_inputs()] == [("feature", 80)]
    assert [(o.name, o.shape[1]) for o in spk.get_outputs()] == [("embedding", 192)]
    encoders = VoiceEncoders(folder)
    for seconds in (1.0, 2.37, 4.0):
        pcm = ti.voice_recording(16_000, seconds)
        codes = encoders.speech_codes(pcm)
        frames = pf.tokenizer_log_mel(pcm).shape[1]
        assert codes.size == math.ceil(frames / 4)  # two stride-2 convolutions: 25 a second
        assert codes.min() >= 0 and codes.max() < 3 ** 8
        assert len(set(codes.tolist())) > 5  # the quantiser is not stuck on one code
    assert encoders.speaker_embedding(ti.voice_recording(16_000, 2.0)).shape == (192,)


def test_the_same_seed_writes_the_same_bytes(tmp_path):
    a = write_tiny_voice_encoders(tmp_path / "a", seed=1)
    b = write_tiny_voice_encoders(tmp_path / "b", seed=1)
    c = write_tiny_voice_encoders(tmp_path / "c", seed=2)
    for name in (SPEECH_TOKENIZER_FILE, SPEAKER_ENCODER_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()


# --- recordings ---------------------------------------------------------------------------


def test_a_recording_too_short_for_a_code_is_refused_with_what_to_do(tmp_path, encoders_dir):
    import soundfile

    path = tmp_path / "blip.wav"
    soundfile.write(str(path), np.zeros(100, dtype=np.float32), 16_000)
    with pytest.raises(BackendError, match="too short"):
        VoiceEncoders(encoders_dir).encode_file(path)


def test_a_long_recording_makes_the_voice_from_its_first_10_s(encoders_dir):
    """The flow holds the whole prompt in its caches: the plan counts 10 s."""
    encoders = VoiceEncoders(encoders_dir)
    long = np.tile(ti.voice_recording(16_000, 8.0), 5)  # 40 s
    assert encoders.encode(long, 16_000).tokens.shape[1] == 25 * 10


def test_missing_encoders_are_named(tmp_path):
    (tmp_path / SPEECH_TOKENIZER_FILE).write_bytes(b"")
    with pytest.raises(BackendError, match=SPEAKER_ENCODER_FILE):
        VoiceEncoders(tmp_path)


def test_builtin_voices_are_the_reference_files_a_checkpoint_ships(tmp_path):
    assert builtin_voices(tmp_path) == {}
    (tmp_path / "assets" / "ref_audio").mkdir(parents=True)
    for name in ("assets/demo.wav", "assets/ref_audio/ref_en_dlc_1.wav"):
        (tmp_path / name).write_bytes(b"RIFF")
    assert builtin_voices(tmp_path) == {
        "demo": tmp_path / "assets/demo.wav",
        "ref_en_dlc_1": tmp_path / "assets/ref_audio/ref_en_dlc_1.wav"}


# --- the cache ---------------------------------------------------------------------------------


@pytest.fixture()
def voice(tmp_path, recordings) -> Path:
    path = tmp_path / "me.wav"
    path.write_bytes(recordings[0].read_bytes())
    return path


def _equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in ((a.tokens, b.tokens), (a.speaker, b.speaker),
                                              (a.mel, b.mel)))


def test_the_second_start_reads_the_prompt_beside_the_recording(voice, encoders_dir):
    first = VoiceCache(VoiceEncoders(encoders_dir))
    computed = first.prompt_for(voice)
    assert first.last_source == "computed" and VoiceCache.beside(voice).is_file()
    encoders = VoiceEncoders(encoders_dir)
    second = VoiceCache(encoders)
    assert _equal(second.prompt_for(voice), computed)
    assert second.last_source == "cache"
    assert encoders._sessions == {}  # the ONNX encoders were never loaded


def test_a_changed_recording_or_other_encoders_make_the_cache_stale(voice, encoders_dir, tmp_path,
                                                                   recordings, caplog):
    VoiceCache(VoiceEncoders(encoders_dir)).prompt_for(voice)
    voice.write_bytes(recordings[1].read_bytes())  # the persona recorded again
    cache = VoiceCache(VoiceEncoders(encoders_dir))
    with caplog.at_level(logging.INFO):
        prompt = cache.prompt_for(voice)
    assert cache.last_source == "computed" and "stale" in caplog.text
    assert prompt.tokens.shape[1] == 150  # the 6 s recording's codes, not the 10 s one's
    other = write_tiny_voice_encoders(tmp_path / "other", seed=5)
    again = VoiceCache(VoiceEncoders(other))
    again.prompt_for(voice)
    assert again.last_source == "computed"


def test_a_corrupt_cache_file_is_computed_again_with_a_log_line(voice, encoders_dir, caplog):
    computed = VoiceCache(VoiceEncoders(encoders_dir)).prompt_for(voice)
    path = VoiceCache.beside(voice)
    for damage in (b"not a safetensors file", path.read_bytes()[:-40]):
        path.write_bytes(damage)
        cache = VoiceCache(VoiceEncoders(encoders_dir))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert _equal(cache.prompt_for(voice), computed)
        assert cache.last_source == "computed" and "cannot be read" in caplog.text
    assert VoiceCache(VoiceEncoders(encoders_dir)).prompt_for(voice) is not None
    # ... and the rewritten file serves the next start.
    cache = VoiceCache(VoiceEncoders(encoders_dir))
    cache.prompt_for(voice)
    assert cache.last_source == "cache"


def test_encoder_files_are_hashed_again_only_when_they_change(voice, encoders_dir, monkeypatch):
    VoiceCache(VoiceEncoders(encoders_dir)).prompt_for(voice)
    hashed = []
    real = vc.file_sha256
    monkeypatch.setattr(vc, "file_sha256", lambda p: hashed.append(p.name) or real(p))
    cache = VoiceCache(VoiceEncoders(encoders_dir))
    cache.prompt_for(voice)
    assert cache.last_source == "cache" and hashed == []
    speaker = encoders_dir / SPEAKER_ENCODER_FILE
    st = speaker.stat()
    import os

    os.utime(speaker, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched, same bytes
    cache = VoiceCache(VoiceEncoders(encoders_dir))
    cache.prompt_for(voice)
    assert hashed == [SPEAKER_ENCODER_FILE] and cache.last_source == "cache"


def test_an_unwritable_folder_falls_back_or_goes_without(voice, encoders_dir, tmp_path,
                                                        monkeypatch, caplog):
    real = vc.VoiceCache._write

    def refuse_beside(self, path, prompt, key):
        if path == VoiceCache.beside(voice):
            raise_oserror = OSError(13, "Permission denied", str(path))
            vc.log.warning("the voice cache %s cannot be written (%s); the voice is used "
                           "without being kept", path, raise_oserror)
            return False
        return real(self, path, prompt, key)

    monkeypatch.setattr(vc.VoiceCache, "_write", refuse_beside)
    alone = VoiceCache(VoiceEncoders(encoders_dir))
    with caplog.at_level(logging.WARNING):
        assert alone.prompt_for(voice) is not None
    assert "cannot be written" in caplog.text and not VoiceCache.beside(voice).exists()
    fallback = tmp_path / "cache"
    VoiceCache(VoiceEncoders(encoders_dir), fallback_dir=fallback).prompt_for(voice)
    second = VoiceCache(VoiceEncoders(encoders_dir), fallback_dir=fallback)
    second.prompt_for(voice)
    assert second.last_source == "cache" and len(list(fallback.iterdir())) == 1


def test_a_write_that_fails_leaves_no_temporary_file(voice, encoders_dir, monkeypatch):
    import safetensors.torch

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    cache = VoiceCache(VoiceEncoders(encoders_dir))
    assert cache.prompt_for(voice) is not None
    assert sorted(p.name for p in voice.parent.iterdir()) == ["me.wav"]


def test_a_missing_recording_is_a_clear_error(tmp_path, encoders_dir):
    with pytest.raises(BackendError, match="cannot be read"):
        VoiceCache(VoiceEncoders(encoders_dir)).prompt_for(tmp_path / "gone.wav")
