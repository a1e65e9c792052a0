"""A voice prompt recording -> `VoicePrompt`, with the checkpoint's two ONNX encoders.

As the reference's `Token2wav._prepare_prompt` (minicpmo-utils 1.0.6) makes it, from the
features of prompt_features.py:

* the prompt's speech codes: `speech_tokenizer_v2_25hz.onnx` (25 codes a second) on the
  128-bin log-mel of the 16 kHz recording;
* the speaker embedding: `campplus.onnx` (CAM++, 192 values) on its mean-normalised
  80-bin Kaldi filterbank;
* the prompt mel: the 24 kHz log-mel, replicate-padded (or cut) to two frames per code.

Both encoders run on onnxruntime (the reference runs the tokenizer through s3tokenizer's
torch re-implementation of the same graph); input and output names are read from the
sessions, in the order the published files declare them (tokenizer: the features
[1, 128, frames] float32 and their length [1] int32, then the codes; CAM++: the features
[1, frames, 80] float32, then the embedding [1, 192]). Sessions are made on first use,
so a start that finds its prompt in the voice cache (voice_cache.py) never loads them.

Recordings over MAX_PROMPT_SECONDS are cut to their start: the flow keeps the whole
prompt in its stream caches for the conversation (1.4 GiB for 10 s at full size, the
memory plan's figure), and 10 s is what the Persona page records. (The published
tokenizer's own limit is 30 s.)
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import numpy as np
import torch

from app.model.contract import BackendError
from app.model.minicpm_o.memory import VOICE_PROMPT_SECONDS
from app.model.minicpm_o.token2wav import prompt_features as features
from app.model.minicpm_o.token2wav.prompt import VoicePrompt

log = logging.getLogger(__name__)

SPEECH_TOKENIZER_FILE = "speech_tokenizer_v2_25hz.onnx"
SPEAKER_ENCODER_FILE = "campplus.onnx"
MAX_PROMPT_SECONDS = float(VOICE_PROMPT_SECONDS)
# Shorter clips hold too little of a voice (and the features' windows need some audio).
MIN_PROMPT_SECONDS = 0.5
MEL_FRAMES_PER_CODE = 2  # 50 mel frames a second for 25 codes a second (the flow's up_rate)
# Where the official code and demo look for reference voices shipped with a checkpoint:
# get_sys_prompt's "assets/demo.wav"; the demo's assets/ref_audio/*.wav.
BUILTIN_VOICE_GLOBS = ("assets/demo.wav", "assets/ref_audio/*.wav")


def read_recording(path: Path) -> tuple[np.ndarray, int]:
    """A recording as mono float32 at its own rate (channels averaged)."""
    import soundfile

    path = Path(path).expanduser()
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own LibsndfileError
        raise BackendError(f"the voice recording {path} cannot be read ({exc})",
                           hint="use a WAV or FLAC file") from exc
    mono = np.nan_to_num(audio.mean(axis=1)).astype(np.float32)
    if mono.size == 0:
        raise BackendError(f"the voice recording {path.name} is empty",
                           hint="use a few seconds of clear speech")
    return mono, int(rate)


def builtin_voices(checkpoint: Path) -> dict[str, Path]:
    """Reference voices a checkpoint folder ships, by name (the file's stem)."""
    found: dict[str, Path] = {}
    for pattern in BUILTIN_VOICE_GLOBS:
        for path in sorted(Path(checkpoint).glob(pattern)):
            if path.is_file():
                found.setdefault(path.stem, path)
    return found


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class VoiceEncoders:
    """The two ONNX encoders of one token2wav folder (module docstring)."""

    def __init__(self, folder: Path, *, threads: int = 2) -> None:
        self.folder = Path(folder)
        self.threads = threads
        self.tokenizer_path = self.folder / SPEECH_TOKENIZER_FILE
        self.speaker_path = self.folder / SPEAKER_ENCODER_FILE
        missing = [p.name for p in (self.tokenizer_path, self.speaker_path) if not p.is_file()]
        if missing:
            raise BackendError(f"{self.folder} lacks the voice encoders {', '.join(missing)}",
                               hint="download the checkpoint's assets/token2wav folder again")
        self._sessions: dict[str, object] = {}
        self._lock = threading.Lock()

    def _session(self, path: Path):
        import onnxruntime

        with self._lock:
            session = self._sessions.get(path.name)
            if session is None:
                options = onnxruntime.SessionOptions()
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.intra_op_num_threads = self.threads
                try:
                    session = onnxruntime.InferenceSession(
                        str(path), sess_options=options, providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph
                    raise BackendError(f"the voice encoder {path} cannot be loaded ({exc})",
                                       hint="download the checkpoint's assets/token2wav "
                                            "folder again") from exc
                self._sessions[path.name] = session
            return session

    def speech_codes(self, pcm16k: np.ndarray) -> np.ndarray:
        """int32 [codes] of 16 kHz audio (25 a second)."""
        session = self._session(self.tokenizer_path)
        mel = features.tokenizer_log_mel(pcm16k)[None]  # [1, 128, frames]
        feats, length = (i.name for i in session.get_inputs()[:2])
        out = session.run(None, {feats: mel.astype(np.float32),
                                 length: np.array([mel.shape[2]], dtype=np.int32)})[0]
        return np.asarray(out).reshape(-1).astype(np.int32)

    def speaker_embedding(self, pcm16k: np.ndarray) -> np.ndarray:
        """float32 [192] CAM++ embedding of 16 kHz audio."""
        session = self._session(self.speaker_path)
        fbank = features.speaker_fbank(pcm16k)[None]  # [1, frames, 80]
        name = session.get_inputs()[0].name
        out = session.run(None, {name: fbank.astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def encode(self, samples: np.ndarray, rate: int) -> VoicePrompt:
        """The VoicePrompt of a mono recording at `rate`."""
        if samples.size < MIN_PROMPT_SECONDS * rate:
            raise BackendError(f"the voice recording lasts {samples.size / rate:.2f} s, too short "
                               "to make a voice from",
                               hint="record a few seconds of clear speech (10 s is best)")
        limit = int(MAX_PROMPT_SECONDS * rate)
        if samples.size > limit:
            log.info("the voice recording lasts %.1f s; its first %.0f s make the voice",
                     samples.size / rate, MAX_PROMPT_SECONDS)
            samples = samples[:limit]
        pcm16k = features.resample(samples, rate, features.TOKENIZER_RATE)
        codes = self.speech_codes(pcm16k)
        if codes.size == 0:  # not with the published tokenizer past the length check
            raise BackendError("the voice encoder gave no speech code for the recording",
                               hint="record a few seconds of clear speech")
        speaker = self.speaker_embedding(pcm16k)
        mel = features.prompt_mel(features.resample(samples, rate, features.MEL_RATE))
        frames = MEL_FRAMES_PER_CODE * codes.size
        if mel.shape[0] >= frames:
            mel = mel[:frames]
        else:  # repeat the last frame, as the reference's replicate padding does
            mel = np.concatenate([mel, np.repeat(mel[-1:], frames - mel.shape[0], axis=0)])
        return VoicePrompt(tokens=torch.from_numpy(codes)[None],
                           speaker=torch.from_numpy(speaker)[None],
                           mel=torch.from_numpy(np.ascontiguousarray(mel))[None])

    def encode_file(self, path: Path) -> VoicePrompt:
        return self.encode(*read_recording(path))

    def fingerprint(self) -> str:
        """What identifies these encoders: the sha256 of both files' bytes."""
        return f"{file_sha256(self.tokenizer_path)}:{file_sha256(self.speaker_path)}"
