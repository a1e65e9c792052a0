"""MiniCPM-o's speech path as the loader sets it up and a persona picks its voice.

The checkpoint ships its speech vocoder beside the weights, in `assets/token2wav/`
(token2wav/__init__.py says what each file is). Loading a checkpoint loads it too: a
MiniCPM-o without it could only write, so a folder that lacks it is refused with what
to do. The voice is a recording: the persona's own, else one the checkpoint ships
(`assets/demo.wav`, `assets/ref_audio/*.wav`), by name or the first of them. Its
prompt for token2wav is computed once and kept beside it (token2wav/voice_cache.py);
when the persona's folder cannot be written to, in the app's cache folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.model.contract import BackendError, Persona

log = logging.getLogger(__name__)

ASSETS = Path("assets") / "token2wav"


def attach_speech(loaded: Any, folder: Path, device: str) -> None:
    """Load the checkpoint's token2wav onto `device` and its voices into `loaded`."""
    from app.model.minicpm_o.token2wav.stream import Token2Wav
    from app.model.minicpm_o.token2wav.voice_cache import VoiceCache
    from app.model.minicpm_o.token2wav.voice_encoders import VoiceEncoders, builtin_voices

    assets = Path(folder) / ASSETS
    if not assets.is_dir():
        raise BackendError(
            f"{folder} has no {ASSETS.as_posix()} folder: MiniCPM-o's speech vocoder is "
            "missing, so it could not speak",
            hint="download the checkpoint again (duetto models get minicpm-o-4.5); a tiny "
                 "test model from an older Duetto: build it again (duetto models tiny "
                 "minicpm-o DIR)")
    try:
        loaded.token2wav = Token2Wav.load(assets, device=device)
    except BackendError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BackendError(f"MiniCPM-o's speech vocoder in {assets} cannot be loaded ({exc})",
                           hint="download the checkpoint's assets/token2wav folder again"
                           ) from exc
    loaded.voices = VoiceCache(VoiceEncoders(assets), fallback_dir=_fallback_dir())
    loaded.builtin_voices = builtin_voices(Path(folder))


def _fallback_dir() -> Path | None:
    try:
        from app import paths

        return paths.data_dir() / "voices"
    except Exception:  # platformdirs missing (the GPU check's bare environment)
        return None


def voice_recording(loaded: Any, persona: Persona) -> Path:
    """The recording the persona speaks with (module docstring)."""
    voice = persona.voice
    if voice.reference_audio is not None:
        return Path(voice.reference_audio).expanduser()
    shipped = loaded.builtin_voices
    if voice.builtin:
        if voice.builtin not in shipped:
            names = ", ".join(sorted(shipped)) or "none"
            raise BackendError(f"MiniCPM-o has no built-in voice '{voice.builtin}' "
                               f"(this checkpoint ships: {names})",
                               hint="pick one of those, or give the persona a voice recording")
        return shipped[voice.builtin]
    if not shipped:
        raise BackendError("MiniCPM-o speaks in the voice of a recording, and this persona "
                           "has none (nor does the checkpoint ship one)",
                           hint="record the persona's voice on the Persona page (10 s)")
    return next(iter(shipped.values()))
