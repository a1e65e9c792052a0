"""A persona made to fit the loaded model: a voice it has, or a recording it can read.

A persona never stops a conversation from starting because of its voice: a built-in
name the model lacks, a reference recording the model cannot use, or one that is
missing, not audio, empty, too short or holding NaN samples each fall back to the
model's default voice, with a note naming the file and what was wrong. No Qt here: the
window, the command line and the benchmarks call it the same way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from app.capture.base import CaptureError
from app.capture.files import check_audio_file
from app.model.contract import BackendSpec, Persona, Voice

# Below this a recording holds too little of a voice to imitate (Moshi reads whole 80 ms
# frames and needs several of them to hear a speaker).
MIN_VOICE_SECONDS = 0.5


def voice_recording_problem(path: Path) -> str | None:
    """Why the recording at `path` cannot serve as a voice, in words; None if it can."""
    try:
        info = check_audio_file(path)
    except CaptureError as exc:
        return str(exc)
    if info.seconds < MIN_VOICE_SECONDS:
        return (f"the voice recording {path} lasts {info.seconds:.2f} s, too short to "
                f"imitate (record at least {MIN_VOICE_SECONDS:g} s of speech)")
    if info.nonfinite:
        return (f"the voice recording {path} holds {info.nonfinite} samples that are not "
                "numbers (NaN or infinite)")
    return None


def fit_persona(persona: Persona, spec: BackendSpec) -> tuple[Persona, str]:
    """The persona with a voice this model can use, and a note when it had to change."""
    voice = persona.voice
    default = spec.voices[0] if spec.voices else None
    default_text = f"its voice '{default}'" if default else "its default voice"
    if voice.builtin and voice.builtin not in spec.voices:
        # A voice of another family (Qwen's 'Chelsie' asked of Moshi): this model's first
        # voice, or its default voice where it names none (Moshi before it is loaded).
        if spec.voices:
            note = (f"this model has no voice '{voice.builtin}'; using '{default}' "
                    f"(voices: {', '.join(spec.voices)})")
        else:
            note = f"{spec.family} has no voice '{voice.builtin}'; it speaks with {default_text}"
        return replace(persona, voice=Voice(builtin=default)), note
    if voice.reference_audio is not None and not voice.builtin:
        if not spec.accepts_reference_voice:
            note = f"{spec.family} cannot speak with a reference recording; using {default_text}"
            return replace(persona, voice=Voice(builtin=default)), note
        problem = voice_recording_problem(Path(voice.reference_audio))
        if problem is not None:
            note = (f"persona '{persona.name}': {problem}; the assistant speaks with "
                    f"{default_text} instead. Record or pick another voice in Settings → "
                    "Persona")
            return replace(persona, voice=Voice(builtin=default)), note
    return persona, ""
