"""Personas: who the assistant is. Presets ship inside the package (app/assets/personas/);
the user's own live in the config folder's personas/. One JSON file per persona, its id is
the file name.

A file looks like:

    {
      "name": "Language tutor",
      "description": "Talks with you in the language you learn and corrects you kindly.",
      "role_prompt": "You are a patient language tutor ...",
      "language": "es",
      "voice": {"builtin": "Chelsie"}          (or {"reference": "voices/me.wav"}, or {})
    }

A reference recording's path is relative to the persona's own folder. Reading a folder
never fails as a whole: a broken file becomes a `PersonaProblem` naming the file and
what is wrong, and the others still load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import paths
from app.config.atomic import write_text_atomic
from app.model.contract import Persona, Voice

PERSONA_SUFFIX = ".json"
_ID_RE = re.compile(r"[^a-z0-9]+")
MAX_PROMPT_CHARS = 8000


def presets_dir() -> Path:
    """The shipped presets: the package's assets/personas (DUETTO_ASSETS_DIR moves it)."""
    return paths.assets_dir() / "personas"


def user_dir() -> Path:
    return paths.config_dir() / "personas"


def voices_dir() -> Path:
    """Reference recordings the user made or picked for their personas."""
    return user_dir() / "voices"


@dataclass(frozen=True)
class PersonaFile:
    """A persona as stored, with where it came from."""

    id: str
    name: str
    role_prompt: str
    language: str = "en"
    description: str = ""
    builtin_voice: str | None = None
    reference_audio: Path | None = None
    preset: bool = False  # shipped with the app (read-only), not the user's own
    path: Path | None = None

    def to_persona(self) -> Persona:
        return Persona(
            name=self.name,
            role_prompt=self.role_prompt,
            language=self.language,
            voice=Voice(builtin=self.builtin_voice, reference_audio=self.reference_audio),
        )

    def voice_text(self) -> str:
        return self.to_persona().voice.describe()

    def to_json(self, relative_to: Path | None = None) -> dict[str, Any]:
        voice: dict[str, str] = {}
        if self.builtin_voice:
            voice["builtin"] = self.builtin_voice
        elif self.reference_audio is not None:
            ref = self.reference_audio
            if relative_to is not None and ref.is_relative_to(relative_to):
                ref = ref.relative_to(relative_to)
            voice["reference"] = ref.as_posix()
        return {
            "name": self.name,
            "description": self.description,
            "role_prompt": self.role_prompt,
            "language": self.language,
            "voice": voice,
        }


@dataclass(frozen=True)
class PersonaProblem:
    path: Path
    message: str

    def describe(self) -> str:
        return f"persona file {self.path.name}: {self.message}"


@dataclass
class PersonaLibrary:
    """Every persona that loaded, presets first, and the files that did not."""

    personas: list[PersonaFile] = field(default_factory=list)
    problems: list[PersonaProblem] = field(default_factory=list)

    def get(self, persona_id: str) -> PersonaFile | None:
        return next((p for p in self.personas if p.id == persona_id), None)

    def ids(self) -> list[str]:
        return [p.id for p in self.personas]


def slug(name: str) -> str:
    text = _ID_RE.sub("-", name.strip().lower()).strip("-")
    return text[:48] or "persona"


def _text(data: dict[str, Any], key: str, required: bool = True) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be text")
    if required and not value.strip():
        raise ValueError(f"'{key}' is missing or empty")
    return value.strip()


def parse(data: Any, path: Path, preset: bool) -> PersonaFile:
    """One persona from decoded JSON; ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the file does not hold a JSON object")
    name = _text(data, "name")
    prompt = _text(data, "role_prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the role prompt is longer than {MAX_PROMPT_CHARS} characters")
    language = _text(data, "language", required=False) or "en"
    voice = data.get("voice", {}) or {}
    if not isinstance(voice, dict):
        raise ValueError("'voice' must be an object like {\"builtin\": \"Chelsie\"}")
    builtin = voice.get("builtin")
    reference = voice.get("reference")
    if builtin is not None and (not isinstance(builtin, str) or not builtin.strip()):
        raise ValueError("'voice.builtin' must be a voice name")
    if reference is not None and not isinstance(reference, str):
        raise ValueError("'voice.reference' must be a file path")
    if builtin and reference:
        raise ValueError("give either 'voice.builtin' or 'voice.reference', not both")
    ref_path = None
    if reference:
        ref_path = Path(reference).expanduser()
        if not ref_path.is_absolute():
            ref_path = path.parent / ref_path
    return PersonaFile(
        id=path.stem,
        name=name,
        role_prompt=prompt,
        language=language,
        description=_text(data, "description", required=False),
        builtin_voice=builtin.strip() if builtin else None,
        reference_audio=ref_path,
        preset=preset,
        path=path,
    )


def read_file(path: Path, preset: bool = False) -> PersonaFile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:  # "[[[[…": the parser gives up before it can say where
        raise ValueError("nested too deeply to be a persona") from None
    return parse(data, path, preset)


def _read_folder(folder: Path, preset: bool, library: PersonaLibrary) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.glob(f"*{PERSONA_SUFFIX}")):
        try:
            persona = read_file(path, preset)
        except (OSError, ValueError) as exc:
            library.problems.append(PersonaProblem(path, str(exc)))
            continue
        if library.get(persona.id) is not None:
            # A user file named like a preset replaces it: that is how presets are edited.
            library.personas = [p for p in library.personas if p.id != persona.id]
        library.personas.append(persona)


def load_all(presets: Path | None = None, users: Path | None = None) -> PersonaLibrary:
    library = PersonaLibrary()
    _read_folder(presets or presets_dir(), True, library)
    if not any(p.preset for p in library.personas):
        library.problems.append(PersonaProblem(
            presets or presets_dir(),
            "no persona presets found (the install lacks app/assets/personas)",
        ))
    _read_folder(users or user_dir(), False, library)
    return library


def unique_id(name: str, taken: list[str]) -> str:
    base = slug(name)
    candidate, n = base, 2
    while candidate in taken:
        candidate = f"{base}-{n}"
        n += 1
    return candidate


def save_user(persona: PersonaFile, folder: Path | None = None) -> PersonaFile:
    """Write the user's persona (atomically) and return it as stored."""
    folder = folder or user_dir()
    path = folder / f"{persona.id}{PERSONA_SUFFIX}"
    stored = PersonaFile(
        id=persona.id,
        name=persona.name,
        role_prompt=persona.role_prompt,
        language=persona.language,
        description=persona.description,
        builtin_voice=persona.builtin_voice,
        reference_audio=persona.reference_audio,
        preset=False,
        path=path,
    )
    parse(stored.to_json(), path, False)  # refuse to write what could not be read back
    write_text_atomic(path, json.dumps(stored.to_json(folder), indent=2, ensure_ascii=False)
                      + "\n")
    return stored


def delete_user(persona: PersonaFile) -> None:
    if persona.preset or persona.path is None:
        raise ValueError("presets cannot be deleted")
    persona.path.unlink(missing_ok=True)
