"""Duplex benchmark scenarios: one TOML file each, read into frozen dataclasses.

A scenario is a scripted user: lines of speech, each placed in time and each saying what
the assistant is expected to do about it. A line is placed by exactly one of:

* `at = 1.5`        seconds from the start of the scenario;
* `gap = 0.8`       seconds after the previous line ended (the user's own rhythm);
* `on_speech = 1.0` seconds after the assistant started speaking (the speech in progress
                    when the previous line ended, or the next one): interruptions and
                    backchannels land on the assistant's speech, whatever its latency;
* `on_silence = 1.0` seconds after the assistant, having spoken since the previous line
                    started, fell silent: the next turn of a conversation.

Reactive lines wait at most `timeout` seconds after the previous line; then they are
spoken anyway and marked as such, so a mute assistant cannot stall the benchmark.

`expect` says what the line is for (see EXPECTATIONS). A line's voice is espeak-ng's:
`voice` (a language such as "en-gb-scotland", optionally with a variant: "en-us+f3"),
`wpm` and `pitch`; a scenario-level `[voice]` table (name, wpm, pitch) sets them for
every line that does not. Scenario-level tables add an echo path, background noise and
video (a generated `scene`, a video `file`, or a `photo`: one of the photographs in
app/bench/photos, or an image file); `repeat_until` cycles the lines until the scenario
has run that many seconds (long sessions); `default = false` keeps a scenario out of the
default set. Whether espeak-ng knows a voice is checked before a run
(`speech_cache.check_voices`), not here: loading a scenario needs no espeak-ng.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from app.bench.speech_cache import Voice

EXPECTATIONS = {
    "respond": "the line ends the user's turn: the assistant should take the turn",
    "hold": "the user pauses mid-thought after this line: the assistant should wait",
    "continue": "a backchannel over the assistant: it should keep talking",
    "interrupt": "the user talks over the assistant: it should stop, then answer",
    "none": "not scored",
}
TRIGGERS = ("at", "gap", "on_speech", "on_silence")
NOISE_KINDS = ("white", "pink", "hum", "babble")
SCENES = ("desk", "street")
SETS = ("default", "hard")  # built-in sets: the scenarios folder and its hard/ folder
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# espeak-ng's language names ("en", "en-gb-x-rp") and an optional "+variant" ("+f3").
_VOICE_NAME = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*(\+[A-Za-z0-9_]+)?")
_VOICE_KEYS = {"name", "wpm", "pitch"}
_LINE_KEYS = {*TRIGGERS, "text", "expect", "timeout", "voice", "wpm", "pitch", "gain_db"}
_TOP_KEYS = {"name", "category", "description", "default", "line", "tail", "max_tail",
             "repeat_until", "echo", "noise", "video", "end_of_turn_silence", "voice"}


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Line:
    text: str
    expect: str
    trigger: str  # one of TRIGGERS
    value: float  # seconds, meaning depends on trigger
    timeout: float = 8.0
    voice: Voice = field(default_factory=Voice)
    gain_db: float = 0.0

    @property
    def reactive(self) -> bool:
        return self.trigger in ("on_speech", "on_silence")


@dataclass(frozen=True)
class Echo:
    gain: float  # linear, speaker to mic
    delay: float  # seconds
    cancellation: bool = True


@dataclass(frozen=True)
class Noise:
    kind: str
    level_db: float  # RMS in dBFS
    seed: int = 0


@dataclass(frozen=True)
class Video:
    scene: str | None = None  # a generated scene (SCENES)
    file: Path | None = None  # or a video file, relative to the scenario's folder
    fps: float = 2.0
    photo: Path | None = None  # or a still photograph, seen through a hand-held camera


@dataclass(frozen=True)
class Scenario:
    name: str
    category: str
    description: str
    lines: tuple[Line, ...]
    default: bool = True
    tail: float = 2.0  # seconds of quiet after the last line and the assistant's answer
    max_tail: float = 12.0  # at most this long after the last line
    repeat_until: float | None = None
    echo: Echo | None = None
    noise: Noise | None = None
    video: Video | None = None
    end_of_turn_silence: float | None = None  # override the session's default
    source: Path | None = field(default=None, compare=False)


def _number(table: dict[str, Any], key: str, where: str, *, lo: float, hi: float) -> float:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where}: {key} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{where}: {key} = {value} lies outside [{lo}, {hi}]")
    return float(value)


def _unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(extra)}")


def _voice_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _VOICE_NAME.fullmatch(value):
        raise ScenarioError(
            f"{where}: voice must be an espeak-ng voice such as \"en-us\", "
            f"\"en-gb-scotland\" or \"en-us+f3\" (language, then +variant), got {value!r}"
        )
    return value


def _voice(raw: dict[str, Any], where: str, default: Voice, name_key: str) -> Voice:
    """The voice of `raw` (a line, or the scenario's [voice] table) over `default`."""
    return Voice(
        name=_voice_name(raw[name_key], where) if name_key in raw else default.name,
        wpm=int(_number(raw, "wpm", where, lo=80, hi=450)) if "wpm" in raw else default.wpm,
        pitch=(int(_number(raw, "pitch", where, lo=0, hi=99)) if "pitch" in raw
               else default.pitch),
    )


def _line(raw: Any, where: str, first: bool, default_voice: Voice) -> Line:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a line must be a table")
    _unknown(raw, _LINE_KEYS, where)
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ScenarioError(f"{where}: text must be a non-empty string")
    expect = raw.get("expect", "none")
    if expect not in EXPECTATIONS:
        raise ScenarioError(f"{where}: expect must be one of {', '.join(EXPECTATIONS)}")
    given = [t for t in TRIGGERS if t in raw]
    if len(given) != 1:
        raise ScenarioError(f"{where}: give exactly one of {', '.join(TRIGGERS)}")
    trigger = given[0]
    if first and trigger not in ("at", "gap"):
        raise ScenarioError(f"{where}: the first line must be placed with at or gap")
    value = _number(raw, trigger, where, lo=0.0, hi=3600.0)
    timeout = _number(raw, "timeout", where, lo=0.5, hi=120.0) if "timeout" in raw else 8.0
    voice = _voice(raw, where, default_voice, "voice")
    gain = _number(raw, "gain_db", where, lo=-40.0, hi=12.0) if "gain_db" in raw else 0.0
    return Line(text.strip(), expect, trigger, value, timeout, voice, gain)


def parse(data: dict[str, Any], source: Path | None = None) -> Scenario:
    where = str(source) if source else "scenario"
    _unknown(data, _TOP_KEYS, where)
    name = data.get("name") or (source.stem if source else None)
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{where}: name must be a non-empty string")
    category = data.get("category")
    if not isinstance(category, str) or not category:
        raise ScenarioError(f"{where}: category must be a non-empty string")
    raw_lines = data.get("line")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise ScenarioError(f"{where}: a scenario needs at least one [[line]]")
    default_voice = Voice()
    if "voice" in data:
        v = data["voice"]
        if not isinstance(v, dict):
            raise ScenarioError(f"{where}: voice must be a table ([voice] with name, wpm, "
                                "pitch)")
        _unknown(v, _VOICE_KEYS, f"{where}, voice")
        default_voice = _voice(v, f"{where}, voice", default_voice, "name")
    lines = tuple(
        _line(raw, f"{where}, line {i + 1}", first=(i == 0), default_voice=default_voice)
        for i, raw in enumerate(raw_lines)
    )
    echo = noise = video = None
    if "echo" in data:
        e = data["echo"]
        _unknown(e, {"gain", "delay", "cancellation"}, f"{where}, echo")
        echo = Echo(
            gain=_number(e, "gain", f"{where}, echo", lo=0.0, hi=2.0),
            delay=_number(e, "delay", f"{where}, echo", lo=0.0, hi=0.5),
            cancellation=bool(e.get("cancellation", True)),
        )
    if "noise" in data:
        n = data["noise"]
        _unknown(n, {"kind", "level_db", "seed"}, f"{where}, noise")
        if n.get("kind") not in NOISE_KINDS:
            raise ScenarioError(f"{where}: noise kind must be one of {', '.join(NOISE_KINDS)}")
        noise = Noise(n["kind"], _number(n, "level_db", f"{where}, noise", lo=-90.0, hi=-6.0),
                      int(n.get("seed", 0)))
    if "video" in data:
        video = _video(data["video"], where, source)
    return Scenario(
        name=name,
        category=category,
        description=str(data.get("description", "")),
        lines=lines,
        default=bool(data.get("default", True)),
        tail=_number(data, "tail", where, lo=0.0, hi=60.0) if "tail" in data else 2.0,
        max_tail=_number(data, "max_tail", where, lo=1.0, hi=120.0) if "max_tail" in data
        else 12.0,
        repeat_until=(_number(data, "repeat_until", where, lo=1.0, hi=7200.0)
                      if "repeat_until" in data else None),
        echo=echo,
        noise=noise,
        video=video,
        end_of_turn_silence=(_number(data, "end_of_turn_silence", where, lo=0.05, hi=5.0)
                             if "end_of_turn_silence" in data else None),
        source=source,
    )


def photos_dir() -> Path:
    """The photographs shipped with the benchmark (app/bench/photos, see its README)."""
    return Path(str(resources.files("app.bench") / "photos"))


def photo_names() -> list[str]:
    return sorted(p.stem for p in photos_dir().glob("*.jpg"))


def _photo(value: Any, where: str, source: Path | None) -> Path:
    """A shipped photograph by name ("coffee"), or an image file beside the scenario."""
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where}: photo must be a string")
    if Path(value).suffix.lower() not in PHOTO_SUFFIXES:
        path = photos_dir() / f"{value}.jpg"
        if not path.is_file():
            raise ScenarioError(f"{where}: no shipped photo {value!r}; the shipped ones are "
                                f"{', '.join(photo_names())}, or give an image file "
                                f"({', '.join(PHOTO_SUFFIXES)})")
        return path
    path = Path(value)
    if not path.is_absolute() and source is not None:
        path = source.parent / path
    if not path.is_file():
        raise ScenarioError(f"{where}: photo file {path} does not exist")
    return path


def _video(v: Any, where: str, source: Path | None) -> Video:
    where = f"{where}, video"
    if not isinstance(v, dict):
        raise ScenarioError(f"{where}: video must be a table")
    _unknown(v, {"scene", "file", "photo", "fps"}, where)
    given = [k for k in ("scene", "file", "photo") if k in v]
    if len(given) != 1:
        raise ScenarioError(f"{where}: video needs exactly one of scene, file or photo")
    scene = v.get("scene")
    if scene is not None and scene not in SCENES:
        raise ScenarioError(f"{where}: video scene must be one of {', '.join(SCENES)}")
    path = None
    if "file" in v:
        path = Path(str(v["file"]))
        if not path.is_absolute() and source is not None:
            path = source.parent / path
    photo = _photo(v["photo"], where, source) if "photo" in v else None
    fps = _number(v, "fps", where, lo=0.2, hi=30.0) if "fps" in v else 2.0
    return Video(scene, path, fps, photo)


def load(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    return parse(data, path)


def builtin_dir(which: str = "default") -> Path:
    """A set of scenarios shipped inside the package, found through it: the default set
    (app/bench/scenarios) or the harder one (app/bench/scenarios/hard)."""
    if which not in SETS:
        raise ScenarioError(f"no built-in scenario set {which!r}; the sets are "
                            f"{', '.join(SETS)}")
    folder = Path(str(resources.files("app.bench") / "scenarios"))
    return folder if which == "default" else folder / which


def load_dir(folder: Path) -> list[Scenario]:
    """Every *.toml in `folder`, sorted by name; names must be unique."""
    if not folder.is_dir():
        raise ScenarioError(f"{folder}: not a folder of scenarios")
    scenarios = [load(p) for p in sorted(folder.glob("*.toml"))]
    if not scenarios:
        raise ScenarioError(f"{folder}: no *.toml scenarios in it")
    seen: dict[str, Path | None] = {}
    for s in scenarios:
        if s.name in seen:
            raise ScenarioError(f"scenario name {s.name!r} is used by {seen[s.name]} and "
                                f"{s.source}")
        seen[s.name] = s.source
    return sorted(scenarios, key=lambda s: s.name)
