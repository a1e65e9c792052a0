"""The user's settings: one JSON file in the config folder, read and written whole.

Reading never fails: a missing file gives defaults; a file that cannot be decoded (not
UTF-8, not JSON, nested past what the parser takes) or that is not a JSON object is
renamed aside (`<name>.corrupt-<time>`, kept for the user) and defaults load, with a note
the window shows (`LoadedSettings.notes`, `LoadedSettings.set_aside_to`); a single value
of the wrong type or out of its choices (a quantization "nf9") falls back to its
default, with a note naming it, and the rest of the file is kept. Writing is atomic.
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from app import paths
from app.config.atomic import set_aside, write_text_atomic
from app.model.contract import Quant

SETTINGS_NAME = "settings.json"
SETTINGS_VERSION = 1

DEVICE_CHOICES = ("auto", "cuda", "cpu")
QUANT_CHOICES = tuple(str(q) for q in Quant)


@dataclass
class ModelSettings:
    family: str = "qwen2.5-omni"
    model_id: str = ""  # a registry id, used when `local_dir` is empty
    local_dir: str = ""  # a model folder; wins over `model_id`
    quant: str = "nf4"
    device: str = "auto"  # auto | cuda | cpu
    # A model on a server (vLLM-Omni or `duetto serve`) instead of this machine's; its
    # token lives in the system keyring (app/config/server_token.py), never here.
    use_server: bool = False
    server_address: str = ""  # ws://HOST:PORT or HOST:PORT
    server_model: str = ""  # the model name the server expects ("" = its own)

    @property
    def configured(self) -> bool:
        if self.use_server:
            return bool(self.server_address)
        return bool(self.local_dir or self.model_id)


@dataclass
class DeviceSettings:
    camera: str = "0"  # an index, a device path, or a video file
    camera_on: bool = True
    mic: str = ""  # "" the system default, an index, a name, or an audio file
    speaker: str = ""  # "" the system default, an index, "null", or a .wav path


@dataclass
class ConversationSettings:
    # How long Duetto waits before it answers: 1 quickest .. 5 most patient (what each
    # step means, with and without the model, is app/flow/turn_end.py's PATIENCE).
    turn_patience: int = 3
    # An end-of-turn model listens for how a sentence ends; off: the silence alone decides.
    end_of_turn_model: bool = True
    barge_in_min_speech: float = 0.3  # seconds of speech over the assistant that stop it
    echo_cancellation: bool = True
    record: bool = False
    record_dir: str = ""  # "" = the data folder's recordings/
    push_to_talk: bool = False


@dataclass
class Settings:
    persona: str = "friendly-assistant"
    model: ModelSettings = field(default_factory=ModelSettings)
    devices: DeviceSettings = field(default_factory=DeviceSettings)
    conversation: ConversationSettings = field(default_factory=ConversationSettings)
    first_run_done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"version": SETTINGS_VERSION, **dataclasses.asdict(self)}

    def recordings_dir(self) -> Path:
        chosen = self.conversation.record_dir
        return Path(chosen).expanduser() if chosen else paths.data_dir() / "recordings"


@dataclass(frozen=True)
class LoadedSettings:
    """Settings as read, and what the user should be told about reading them."""

    settings: Settings
    notes: tuple[str, ...] = ()
    set_aside_to: Path | None = None
    existed: bool = True


def settings_path() -> Path:
    return paths.config_dir() / SETTINGS_NAME


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _from_dict(cls: type, data: dict[str, Any], where: str, notes: list[str]) -> Any:
    """Build dataclass `cls` from `data`, keeping defaults for anything missing or wrong."""
    instance = cls()
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        default = getattr(instance, f.name)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and not isinstance(hint, types.GenericAlias):
            if isinstance(value, dict):
                setattr(instance, f.name, _from_dict(hint, value, f"{where}{f.name}.", notes))
            else:
                notes.append(f"setting '{where}{f.name}' is not a group; defaults used")
            continue
        if _fits(value, default):
            setattr(instance, f.name, float(value) if isinstance(default, float) else value)
        else:
            notes.append(f"setting '{where}{f.name}' had an unusable value {value!r}; "
                         f"using {default!r}")
    return instance


PATIENCE_STEPS = range(1, 6)
# Settings files before the patience control kept the end-of-turn silence in seconds;
# these are the silences of patience steps 1..5 (turn_end.PATIENCE): the nearest one
# keeps an old file's choice.
OLD_SILENCE_STEPS = (0.4, 0.5, 0.6, 0.9, 1.2)


def _migrate(data: dict[str, Any], settings: Settings) -> None:
    conv = data.get("conversation")
    if not isinstance(conv, dict) or "turn_patience" in conv:
        return
    old = conv.get("end_of_turn_silence")
    if _fits(old, 0.0):
        nearest = min(range(len(OLD_SILENCE_STEPS)),
                      key=lambda i: abs(OLD_SILENCE_STEPS[i] - float(old)))
        settings.conversation.turn_patience = PATIENCE_STEPS[nearest]


def _validate(settings: Settings, notes: list[str]) -> None:
    """Ranges the conversation code would reject: clamp them, and say so."""
    conv = settings.conversation
    if conv.turn_patience not in PATIENCE_STEPS:
        clamped = min(PATIENCE_STEPS[-1], max(PATIENCE_STEPS[0], conv.turn_patience))
        notes.append(f"end-of-turn patience {conv.turn_patience} is out of range "
                     f"({PATIENCE_STEPS[0]}-{PATIENCE_STEPS[-1]}); using {clamped}")
        conv.turn_patience = clamped
    clamped = min(3.0, max(0.0, conv.barge_in_min_speech))
    if clamped != conv.barge_in_min_speech:
        notes.append(f"barge-in speech {conv.barge_in_min_speech} s is out of range; "
                     f"using {clamped} s")
        conv.barge_in_min_speech = clamped
    if settings.model.device not in DEVICE_CHOICES:
        notes.append(f"unknown compute device {settings.model.device!r}; using auto")
        settings.model.device = "auto"
    if settings.model.quant not in QUANT_CHOICES:
        default = ModelSettings().quant
        notes.append(f"setting 'model.quant' {settings.model.quant!r} is not a quantization "
                     f"({', '.join(QUANT_CHOICES)}); using {default!r}")
        settings.model.quant = default


def from_dict(data: dict[str, Any]) -> tuple[Settings, list[str]]:
    notes: list[str] = []
    settings = _from_dict(Settings, data, "", notes)
    _migrate(data, settings)
    _validate(settings, notes)
    return settings, notes


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a JSON list"
    if isinstance(value, str):
        return "a JSON string"
    if value is None or isinstance(value, bool):
        return f"a bare JSON {json.dumps(value)}"
    return "a JSON number"


def _decode(raw: bytes) -> dict[str, Any]:
    """The file's JSON object; ValueError in words a user can act on."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not text (byte {exc.start} is not UTF-8)") from None
    if not text.strip():
        raise ValueError("it is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"it is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise ValueError("it is nested too deeply to be settings") from None
    if not isinstance(data, dict):
        raise ValueError(f"it holds {_json_kind(data)}, not an object of settings")
    return data


def load(path: Path | None = None) -> LoadedSettings:
    """Read the settings; never raises for a bad file (see the module docstring)."""
    path = path or settings_path()
    try:
        raw = path.read_bytes()  # decoded below, where a bad byte is a damaged file
    except FileNotFoundError:
        return LoadedSettings(Settings(), existed=False)
    except OSError as exc:
        return LoadedSettings(Settings(), (
            f"The settings file {path} could not be read ({exc.strerror or exc}); "
            "Duetto runs with default settings. Check the file's permissions.",))
    try:
        data = _decode(raw)
    except ValueError as exc:
        try:
            moved = set_aside(path)
        except OSError:
            moved = None
        where = (f"it was set aside as {moved.name} (beside it, for you to look into)"
                 if moved else "it could not be moved aside")
        note = (f"The settings file was damaged ({exc}): {where}. Duetto runs with "
                "default settings; choose yours again in Settings.")
        return LoadedSettings(Settings(), (note,), set_aside_to=moved)
    settings, notes = from_dict(data)
    return LoadedSettings(settings, tuple(notes))


def save(settings: Settings, path: Path | None = None) -> Path:
    path = path or settings_path()
    write_text_atomic(path, json.dumps(settings.to_dict(), indent=2) + "\n")
    return path
