"""The benchmark user's voice: espeak-ng speech made offline, cached on disk.

Robotic, but real speech with exact timing, and it needs no network and no model. Each
utterance is synthesized once (espeak-ng writes a WAV, sox resamples it to 16 kHz mono
and trims the leading and trailing silence, so the audio's first and last samples are
the speech's edges) and kept in the user's cache folder under a name derived from
everything that shapes the sound: the same scenario always hears the same audio.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import soundfile

RATE = 16000
# Bump when the synthesis recipe changes, so old cache entries are not reused.
_RECIPE = "espeak-ng+sox-trim-v1"


class SpeechUnavailable(RuntimeError):
    """espeak-ng or sox is missing: the benchmark cannot make its user's voice."""


@dataclass(frozen=True)
class Voice:
    """espeak-ng settings: voice name, words per minute, pitch (0-99)."""

    name: str = "en-us"
    wpm: int = 160
    pitch: int = 50


def default_cache_dir() -> Path:
    override = os.environ.get("DUETTO_SPEECH_CACHE")
    if override:
        return Path(override)
    return Path(platformdirs.user_cache_dir("duetto")) / "speech"


def check_tools() -> None:
    """Raise SpeechUnavailable, saying how to install them, when a tool is missing."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise SpeechUnavailable(
            f"the duplex benchmark speaks with espeak-ng and sox; not found: "
            f"{', '.join(missing)}. Install them (Debian/Ubuntu: apt-get install espeak-ng "
            "sox; macOS: brew install espeak-ng sox; Windows: the espeak-ng and sox "
            "installers, both on PATH)"
        )


class UnknownVoice(ValueError):
    """A scenario asks for a voice espeak-ng does not have."""


def _listed(args: list[str]) -> list[list[str]]:
    done = subprocess.run(["espeak-ng", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SpeechUnavailable(f"espeak-ng {' '.join(args)} failed ({done.returncode}): "
                                f"{done.stderr.strip()[:300]}")
    return [line.split() for line in done.stdout.splitlines()[1:] if line.split()]


def espeak_voices() -> tuple[set[str], set[str]]:
    """The languages espeak-ng speaks (en-us, en-gb-scotland, ...) and its variants (f3).

    Listed rather than tried: espeak-ng refuses an unknown language, but ignores an
    unknown variant and speaks in its default voice, which would make a scenario that
    asks for another voice silently test the usual one.
    """
    check_tools()
    # Columns: priority, language, age/gender, voice name, file, other languages.
    languages = {row[1] for row in _listed(["--voices"]) if len(row) >= 5
                 and not row[4].startswith("mb/")}  # MBROLA voices need a separate package
    variants = {row[4].removeprefix("!v/") for row in _listed(["--voices=variant"])
                if len(row) >= 5}
    return languages, variants


def check_voices(wanted: dict[str, list[str]]) -> None:
    """Raise UnknownVoice when espeak-ng lacks a voice of `wanted` (voice name -> where
    it is asked for, e.g. scenario names), naming each and where, before anything runs."""
    languages, variants = espeak_voices()
    bad = []
    for name, where in sorted(wanted.items()):
        language, _, variant = name.partition("+")
        if language not in languages or (variant and variant not in variants):
            bad.append(f"{name!r} (in {', '.join(sorted(set(where)))})")
    if bad:
        english = sorted(v for v in languages if v.startswith("en"))
        raise UnknownVoice(
            f"espeak-ng has no voice {'; '.join(bad)}. English ones here: "
            f"{', '.join(english)}; a variant after + is one of `espeak-ng "
            "--voices=variant` (f1-f5, m1-m7, ...)"
        )


class SpeechCache:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_cache_dir()
        self.hits = 0
        self.made = 0

    def key(self, text: str, voice: Voice) -> str:
        material = "\n".join([_RECIPE, text, voice.name, str(voice.wpm), str(voice.pitch)])
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:24]

    def speak(self, text: str, voice: Voice | None = None) -> np.ndarray:
        """`text` spoken at 16 kHz, float32 mono, silence trimmed at both ends."""
        if not text.strip():
            raise ValueError("nothing to say: the text is empty")
        voice = voice or Voice()
        path = self.folder / f"{self.key(text, voice)}.wav"
        if path.exists():
            try:
                audio, rate = soundfile.read(str(path), dtype="float32")
                if rate == RATE and audio.ndim == 1 and len(audio):
                    self.hits += 1
                    return audio
            except (RuntimeError, soundfile.LibsndfileError):
                pass  # a torn file from a killed run: make it again
        audio = self._synthesize(text, voice)
        self._store(path, audio)
        self.made += 1
        return audio

    def _synthesize(self, text: str, voice: Voice) -> np.ndarray:
        check_tools()
        with tempfile.TemporaryDirectory(prefix="duetto-speech-") as tmp:
            raw = Path(tmp) / "raw.wav"
            out = Path(tmp) / "out.wav"
            espeak = ["espeak-ng", "-v", voice.name, "-s", str(voice.wpm),
                      "-p", str(voice.pitch), "-w", str(raw), "--", text]
            # Trim both ends: silence at 0.5 % of full scale for 10 ms counts as silence.
            sox = ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out),
                   "silence", "1", "0.01", "0.5%", "reverse",
                   "silence", "1", "0.01", "0.5%", "reverse"]
            for command in (espeak, sox):
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SpeechUnavailable(
                        f"{command[0]} failed ({done.returncode}) on {text!r}: "
                        f"{done.stderr.strip()[:300]}"
                    )
            audio, rate = soundfile.read(str(out), dtype="float32")
        if rate != RATE or len(audio) == 0:
            raise SpeechUnavailable(f"speech synthesis produced no audio for {text!r}")
        return audio

    def _store(self, path: Path, audio: np.ndarray) -> None:
        # Write beside, then rename: parallel runs never read a half-written file.
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.folder, suffix=".wav.part")
        os.close(fd)
        try:
            soundfile.write(tmp_name, audio, RATE, subtype="PCM_16", format="WAV")
            os.replace(tmp_name, path)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
