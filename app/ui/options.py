"""From what the user chose (settings, persona, command line) to ConversationOptions.

No Qt here, so the rules are tested directly: the command line wins over settings, a
model folder wins over a registry id, and a persona's voice is checked against what the
loaded model can actually use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.config.personas import PersonaFile
from app.config.settings import Settings
from app.flow.conversation import ConversationOptions
from app.flow.duplex import DuplexConfig
from app.flow.turn_end import JUDGE_AFTER, patience
from app.model import families, registry
from app.model.contract import BackendError, ModelSource, Quant


@dataclass(frozen=True)
class LaunchOverrides:
    """What `duetto --camera … --mic … --speaker … --model …` asked for this run only."""

    camera: str | None = None
    mic: str | None = None
    speaker: str | None = None
    model_dir: Path | None = None
    quant: str | None = None
    device: str | None = None
    persona: str | None = None
    family: str | None = None  # `--family`: overrides what the model folder says

    @property
    def from_files(self) -> bool:
        return any(v is not None for v in (self.camera, self.mic, self.speaker))


def is_self_check(folder: Path | None) -> bool:
    """A tiny random-weight folder (from `duetto models tiny`) says so in duetto.json."""
    if folder is None:
        return False
    try:
        meta = json.loads((folder / "duetto.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and bool(meta.get("tiny"))


def model_source(settings: Settings, overrides: LaunchOverrides) -> ModelSource:
    """Where the weights come from; BackendError saying what to do when nowhere."""
    if overrides.model_dir is not None:
        return ModelSource(local_dir=overrides.model_dir)
    chosen = settings.model
    if uses_server(settings, overrides):
        if not chosen.server_address:
            raise BackendError("no server address is set",
                               hint="open Settings → Model and enter the server's address")
        return ModelSource()  # the server holds the weights
    if chosen.local_dir:
        return ModelSource(local_dir=Path(chosen.local_dir).expanduser())
    if chosen.model_id:
        return registry.resolve(chosen.model_id)
    raise BackendError("no model is chosen yet",
                       hint="open Settings → Model to pick one, or a local folder")


def uses_server(settings: Settings, overrides: LaunchOverrides) -> bool:
    """The model runs on a server (Settings → Model), unless `--model` names a folder."""
    return settings.model.use_server and overrides.model_dir is None


def server_options(settings: Settings) -> dict[str, object]:
    """The remote backend's options: address, model name, and the kept token."""
    from app.config import server_token

    address = settings.model.server_address.strip()
    return {"address": address, "model": settings.model.server_model.strip(),
            "token": server_token.load(address) or None}


def device_spec(value: str) -> int | str | None:
    """"" is the system default, digits a device index, anything else a name or a file."""
    value = value.strip()
    if not value:
        return None
    return int(value) if value.isdigit() else value


def describe_model(settings: Settings, overrides: LaunchOverrides) -> str:
    if overrides.model_dir is not None:
        return overrides.model_dir.name
    if uses_server(settings, overrides):
        return f"server {settings.model.server_address}"
    if settings.model.local_dir:
        return Path(settings.model.local_dir).name
    return settings.model.model_id or "no model"


def chosen_family(settings: Settings, overrides: LaunchOverrides) -> str:
    """The family to load: `--family` if given, else what a model folder says it holds
    (its config.json, or a family's own layout), else the family chosen in Settings.

    A folder's own word beats Settings: a Moshi folder loaded as Qwen could only fail. A
    folder that says nothing recognisable (missing, damaged, another kind of model) keeps
    the Settings family, whose loader then says exactly what is wrong with it.
    """
    if overrides.family:
        families.get(overrides.family)  # an unknown name is refused here, with the list
        return overrides.family
    if uses_server(settings, overrides):
        return families.REMOTE.name
    folder = overrides.model_dir or (
        Path(settings.model.local_dir).expanduser() if settings.model.local_dir else None)
    if folder is not None:
        try:
            return families.of_folder(folder)
        except BackendError:
            pass
    return settings.model.family


def chosen_quant(settings: Settings, overrides: LaunchOverrides) -> Quant:
    value = overrides.quant or settings.model.quant
    try:
        return Quant(value)
    except ValueError:
        raise BackendError(f"unknown quantization {value!r}",
                           hint=f"one of: {', '.join(q.value for q in Quant)}") from None


def chosen_device(settings: Settings, overrides: LaunchOverrides) -> str | None:
    value = overrides.device or settings.model.device
    return None if value == "auto" else value


def build_options(
    settings: Settings,
    persona: PersonaFile,
    overrides: LaunchOverrides,
    *,
    camera_on: bool,
) -> ConversationOptions:
    """The next conversation's options. Raises BackendError when no model is chosen."""
    devices = settings.devices
    conv = settings.conversation
    step = patience(conv.turn_patience)
    camera_spec = overrides.camera if overrides.camera is not None else devices.camera
    chosen_camera = device_spec(camera_spec)
    if chosen_camera is None:
        chosen_camera = 0  # "" means the first camera
    camera = chosen_camera if camera_on else None
    mic = device_spec(overrides.mic if overrides.mic is not None else devices.mic)
    speaker = device_spec(
        overrides.speaker if overrides.speaker is not None else devices.speaker
    )
    backend_options: dict[str, object] = {}
    device = chosen_device(settings, overrides)
    if device is not None:
        backend_options["device"] = device
    if uses_server(settings, overrides):
        backend_options = server_options(settings)
    return ConversationOptions(
        model=model_source(settings, overrides),
        persona=persona.to_persona(),
        family=chosen_family(settings, overrides),
        quant=chosen_quant(settings, overrides),
        mic=mic,
        camera=camera,
        standby_camera=chosen_camera,  # switched on mid-conversation, this one opens
        speaker=speaker,
        duplex=DuplexConfig(
            end_of_turn_silence=step.cap if conv.end_of_turn_model else step.silence,
            judge_after=JUDGE_AFTER if conv.end_of_turn_model else None,
            barge_in_min_speech=conv.barge_in_min_speech,
        ),
        end_of_turn=step if conv.end_of_turn_model else None,
        echo_cancellation=conv.echo_cancellation,
        record_dir=settings.recordings_dir() if conv.record else None,
        # Files replayed for a demo or a self-check keep going for as long as it runs.
        loop_files=overrides.from_files,
        backend_options=backend_options,
    )
