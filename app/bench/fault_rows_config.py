"""Fault rows on what the user keeps: damaged settings, personas and voice recordings.

Each opens the real window over a damaged file. Nothing may be lost: the original bytes
of a damaged file must still be somewhere in the config folder (set aside, or left as
they were), and whatever was still good must stay in force.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.bench.fault_inputs import base_settings, random_bytes, write_persona, write_settings
from app.bench.fault_report import Outcome
from app.bench.fault_talk import files, judge_common, talk
from app.bench.fault_window import WindowRun
from app.ui.options import LaunchOverrides

# Words a message about a damaged or missing file uses (any one will do).
DAMAGE_WORDS = ("damaged", "corrupt", "could not be read", "cannot be read", "not valid",
                "unreadable", "not utf-8", "set aside", "moved", "unusable", "not a",
                "missing", "not found", "is gone", "no longer", "does not exist")


def _holder(folder: Path, content: bytes) -> Path | None:
    """A file under `folder` holding exactly `content`."""
    for path in sorted(folder.rglob("*")):
        try:
            if path.is_file() and path.read_bytes() == content:
                return path
        except OSError:
            continue
    return None


def _open_window(ctx: Any) -> tuple[WindowRun, dict[str, Any]]:
    """Open the window over the row's folders and read what it loaded; then close it."""
    with WindowRun(ctx.home, LaunchOverrides()) as run:
        run.pump(0.5)
        window = run.window
        loaded = {
            "settings": window.settings,
            "persona": window.current_persona().id,
            "personas": window.library.ids(),
        }
    return run, loaded


def _settings_row(ctx: Any, content: bytes, what: str,
                  keeps: dict[str, Any] | None = None) -> Outcome:
    out = Outcome()
    settings_path = write_settings(ctx.config, content)
    run, loaded = _open_window(ctx)
    out.said = run.texts()
    out.check_words()
    if run.threads_left:
        out.problem("hang", f"threads left after the window closed: {run.threads_left}")
    out.expect_said("setting", "settings", what=what)
    holder = _holder(ctx.config, content) if content else settings_path
    if content and holder is None:
        out.problem("lost", "the original settings file is gone (neither kept nor set aside)")
    if settings_path.exists() and holder != settings_path:
        try:
            json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out.problem("broken", "settings.json was left unreadable")
    settings = loaded["settings"]
    for dotted, expected in (keeps or {}).items():
        value: Any = settings
        for part in dotted.split("."):
            value = getattr(value, part)
        if value != expected:
            out.problem("lost", f"the good setting {dotted}={expected!r} was not kept "
                                f"(now {value!r})")
    where = "no file to keep" if not content else (
        f"original kept as {holder.name}" if holder is not None else "original lost")
    good = ", ".join(f"{k}={v!r}" for k, v in (keeps or {}).items())
    out.kept = f"settings: {where}" + (f"; kept {good}" if good else "")
    return out


def settings_random_bytes(ctx: Any) -> Outcome:
    return _settings_row(ctx, random_bytes(), "the unreadable settings file")


def settings_wrong_types(ctx: Any) -> Outcome:
    data = base_settings(ctx.model_path)
    data["persona"] = "language-tutor"
    data["conversation"] = {"end_of_turn_silence": "slow", "record": "yes",
                            "barge_in_min_speech": 0.5}
    data["devices"] = ["camera", 0]
    data["first_run_done"] = 1
    content = json.dumps(data, indent=2).encode()
    return _settings_row(ctx, content, "the settings of the wrong type",
                         keeps={"persona": "language-tutor",
                                "conversation.barge_in_min_speech": 0.5,
                                "model.quant": "bf16"})


def settings_empty(ctx: Any) -> Outcome:
    return _settings_row(ctx, b"", "the empty settings file")


def settings_json_list(ctx: Any) -> Outcome:
    return _settings_row(ctx, b'["persona", "friendly-assistant"]\n',
                         "settings that are a list, not an object")


# ----------------------------------------------------------------------- personas
def _good_persona(voice: dict | None = None) -> dict:
    return {"name": "My helper", "description": "The user's own persona.",
            "role_prompt": "You are my helper. Answer briefly.", "language": "en",
            "voice": voice if voice is not None else {"builtin": "Chelsie"}}


def persona_corrupt(ctx: Any) -> Outcome:
    out = Outcome()
    write_settings(ctx.config, {**base_settings(ctx.model_path), "persona": "my-helper"})
    write_persona(ctx.config, "my-helper", _good_persona())
    damaged = random_bytes(400, seed=5)
    write_persona(ctx.config, "old-friend", damaged)
    run, loaded = _open_window(ctx)
    out.said = run.texts()
    out.check_words()
    out.expect_said("old-friend", what="the unreadable persona file old-friend.json")
    holder = _holder(ctx.config, damaged)
    if holder is None:
        out.problem("lost", "the damaged persona file is gone")
    if "my-helper" not in loaded["personas"]:
        out.problem("lost", "the user's good persona did not load beside the damaged one")
    if loaded["persona"] != "my-helper":
        out.problem("lost", f"the chosen persona is {loaded['persona']}, not my-helper")
    out.kept = (f"damaged file kept as {holder.name if holder else '(lost)'}; "
                f"{len(loaded['personas'])} personas loaded, my-helper chosen")
    return out


def persona_missing(ctx: Any) -> Outcome:
    out = Outcome()
    write_settings(ctx.config, {**base_settings(ctx.model), "persona": "gone-persona"})
    write_persona(ctx.config, "my-helper", _good_persona())
    done = talk(ctx, files(ctx), wait_answer=False)
    judge_common(out, done)
    out.expect_said("gone-persona", what="the chosen persona's missing file")
    if done.phase != "running":
        out.problem("broken", "no conversation with the chosen persona missing")
    out.kept = ("settings still name gone-persona" if
                json.loads((ctx.config / "settings.json").read_text())["persona"]
                == "gone-persona" else "the choice of persona was rewritten")
    return out


def _voice_row(ctx: Any, voice_bytes: bytes | None, what: str) -> Outcome:
    """A persona whose voice recording is missing or damaged, with a model that speaks
    with reference recordings (the tiny Moshi/PersonaPlex: Qwen2.5-Omni never reads
    them, so for it a bad recording is no fault)."""
    out = Outcome()
    voices = ctx.config / "personas" / "voices"
    voices.mkdir(parents=True, exist_ok=True)
    if voice_bytes is not None:
        (voices / "me.wav").write_bytes(voice_bytes)
    persona_path = write_persona(ctx.config, "my-voice",
                                 _good_persona({"reference": "voices/me.wav"}))
    before = persona_path.read_bytes()
    settings = base_settings(ctx.moshi_model)
    settings["model"]["family"] = "moshi"
    write_settings(ctx.config, {**settings, "persona": "my-voice"})
    base = files(ctx)
    overrides = LaunchOverrides(mic=base.mic, speaker=base.speaker, model_dir=ctx.moshi_model,
                                quant=base.quant, device=base.device)
    done = talk(ctx, overrides, wait_answer=False)
    judge_common(out, done)
    said = " ".join(done.said).lower()
    if "me.wav" not in said and "recording" not in said:
        out.problem("silent", f"nothing told the user about {what}")
    elif not any(word in said for word in DAMAGE_WORDS):
        out.problem("silent", f"the message about the voice does not say it is {what}")
    if done.phase != "running":
        out.problem("broken", f"no conversation with {what}")
    if not persona_path.exists() or persona_path.read_bytes() != before:
        out.problem("lost", "the persona file was changed or removed")
    kept = ["persona file unchanged" if persona_path.exists() else "persona file gone"]
    if voice_bytes is not None:
        holder = _holder(ctx.config, voice_bytes)
        kept.append(f"recording kept as {holder.name}" if holder else "recording lost")
        if holder is None:
            out.problem("lost", "the damaged voice recording is gone")
    out.kept = "; ".join(kept) + " (tiny Moshi)"
    return out


def voice_missing(ctx: Any) -> Outcome:
    return _voice_row(ctx, None, "a missing voice recording")


def voice_corrupt(ctx: Any) -> Outcome:
    return _voice_row(ctx, random_bytes(3000, seed=9), "a damaged voice recording")
