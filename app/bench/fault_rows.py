"""The fault rows `duetto bench faults` runs: name, group, where its code lives, its time.

Each row's code is a function `row(ctx: RowContext) -> Outcome` named by
"module:function", imported only in the worker process that runs it (rows pull in Qt
and torch; the command that lists and judges them does not).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class RowSpec:
    name: str
    group: str
    target: str  # "module:function"
    timeout_s: float  # past this the row is a hang
    what: str  # one line for --list
    # Tiny models the row needs, built with the media files before it starts (not in
    # its time); rows on the user's files alone need none and start at once.
    models: tuple[str, ...] = ("qwen2.5-omni",)
    # Rows of another lane run beside this one's in a second worker: the process rows
    # spend most of their time waiting on an app they started.
    lane: int = 0


_CONFIG = "app.bench.fault_rows_config"
_MEDIA = "app.bench.fault_rows_media"
_LIVE = "app.bench.fault_rows_live"
_MODEL = "app.bench.fault_rows_model"
_PROCESS = "app.bench.fault_rows_process"

ROWS: tuple[RowSpec, ...] = (
    RowSpec("settings-random-bytes", "settings", f"{_CONFIG}:settings_random_bytes", 60,
            "settings.json holds random bytes (not UTF-8)", models=()),
    RowSpec("settings-wrong-types", "settings", f"{_CONFIG}:settings_wrong_types", 60,
            "settings.json holds values of the wrong types beside good ones", models=()),
    RowSpec("settings-empty", "settings", f"{_CONFIG}:settings_empty", 60,
            "settings.json is empty", models=()),
    RowSpec("settings-json-list", "settings", f"{_CONFIG}:settings_json_list", 60,
            "settings.json holds a JSON list", models=()),
    RowSpec("persona-corrupt", "personas", f"{_CONFIG}:persona_corrupt", 60,
            "one of the user's persona files is random bytes", models=()),
    RowSpec("persona-missing", "personas", f"{_CONFIG}:persona_missing", 90,
            "the chosen persona's file is gone"),
    RowSpec("voice-missing", "personas", f"{_CONFIG}:voice_missing", 90,
            "the persona's voice recording is gone (tiny Moshi, which uses it)",
            models=("qwen2.5-omni", "moshi")),
    RowSpec("voice-corrupt", "personas", f"{_CONFIG}:voice_corrupt", 90,
            "the persona's voice recording is not audio (tiny Moshi, which uses it)",
            models=("qwen2.5-omni", "moshi")),
    RowSpec("mic-missing", "media", f"{_MEDIA}:mic_missing", 60,
            "--mic names a file that does not exist"),
    RowSpec("mic-not-media", "media", f"{_MEDIA}:mic_not_media", 60,
            "--mic names a text file called .wav"),
    RowSpec("mic-empty", "media", f"{_MEDIA}:mic_empty", 60, "--mic names an empty file"),
    RowSpec("mic-0-frames", "media", f"{_MEDIA}:mic_zero_frames", 60,
            "--mic names a WAV with a header and no samples"),
    RowSpec("mic-nan", "media", f"{_MEDIA}:mic_nan", 90,
            "--mic names a float WAV whose speech holds NaN samples"),
    RowSpec("mic-inf", "media", f"{_MEDIA}:mic_inf", 90,
            "--mic names a float WAV whose speech holds infinite samples"),
    RowSpec("mic-8khz", "media", f"{_MEDIA}:mic_8khz", 90, "--mic names 8 kHz speech"),
    RowSpec("mic-6ch", "media", f"{_MEDIA}:mic_6ch", 90, "--mic names 6-channel speech"),
    RowSpec("camera-missing", "media", f"{_MEDIA}:camera_missing", 60,
            "--camera names a file that does not exist"),
    RowSpec("camera-not-media", "media", f"{_MEDIA}:camera_not_media", 60,
            "--camera names a text file called .mp4"),
    RowSpec("camera-empty", "media", f"{_MEDIA}:camera_empty", 60,
            "--camera names an empty file"),
    RowSpec("camera-0-frames", "media", f"{_MEDIA}:camera_zero_frames", 60,
            "--camera names a video file with no frames"),
    RowSpec("mic-drops-and-returns", "devices", f"{_LIVE}:mic_drops_and_returns", 120,
            "the microphone is unplugged mid-session and plugged back in"),
    RowSpec("camera-drops-and-returns", "devices", f"{_LIVE}:camera_drops_and_returns", 120,
            "the camera is unplugged mid-session and plugged back in"),
    RowSpec("backend-stall-5s", "model", f"{_LIVE}:backend_stall", 120,
            "the model stalls for 5 s in the middle of an answer"),
    RowSpec("model-empty", "model", f"{_MODEL}:model_empty", 60,
            "--model names an empty folder"),
    RowSpec("model-truncated", "model", f"{_MODEL}:model_truncated", 60,
            "--model names a folder whose weights file was cut short"),
    RowSpec("model-unknown-family", "model", f"{_MODEL}:model_unknown_family", 60,
            "--model names a checkpoint of a family the app does not drive"),
    RowSpec("model-out-of-memory", "model", f"{_MODEL}:model_out_of_memory", 90,
            "loading runs out of GPU memory (simulated), then a retry works"),
    RowSpec("recordings-read-only", "disk", f"{_LIVE}:recordings_read_only", 90,
            "recording is on and the recordings folder is read-only"),
    RowSpec("disk-full", "disk", f"{_LIVE}:disk_full", 90,
            "the disk fills up mid-conversation (simulated with a file-size limit)"),
    RowSpec("kill-9-mid-answer", "process", f"{_PROCESS}:kill_9", 120,
            "`python -m app` is killed with SIGKILL while the assistant speaks", lane=1),
    RowSpec("sigterm-mid-answer", "process", f"{_PROCESS}:sigterm", 120,
            "`python -m app` gets SIGTERM while the assistant speaks", lane=1),
    RowSpec("two-instances", "process", f"{_PROCESS}:two_instances", 150,
            "two `python -m app` start in the same second", lane=1),
)

BY_NAME = {row.name: row for row in ROWS}


def select(patterns: list[str] | None) -> list[RowSpec]:
    """Rows whose name or group matches any pattern (shell style); all when None.

    Raises ValueError naming a pattern that matches nothing.
    """
    if not patterns:
        return list(ROWS)
    chosen = []
    for pattern in patterns:
        hits = [r for r in ROWS if fnmatch.fnmatchcase(r.name, pattern) or r.group == pattern]
        if not hits:
            raise ValueError(f"no fault row matches {pattern!r}; see --list")
        chosen.extend(r for r in hits if r not in chosen)
    return chosen
