"""The exact packages of the app's environment, from the lock files the installer carries.

The locks are PEP 751 `pylock.toml` files written by `uv pip compile` when the installer
is built: one for the app's dependencies without torch, one per torch build (torch and
the packages only that build needs, such as NVIDIA's CUDA libraries). Each package names
its version, its wheel's address, size and sha256. The plan for this machine is the app's
lock plus the chosen torch build's lock, each package's best wheel for this interpreter,
and the wheels the installer carries itself (the app's own, and any dependency that PyPI
has only as source, built when the installer was made).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.tags import Tag, parse_tag
from packaging.utils import canonicalize_name, parse_wheel_filename


class PlanError(RuntimeError):
    """A lock file the launcher cannot use: the installer itself is damaged."""


@dataclass(frozen=True)
class Wheel:
    name: str  # canonical name
    version: str
    filename: str
    size: int
    sha256: str
    url: str | None = None  # to download
    path: Path | None = None  # carried inside the installer

    @property
    def key(self) -> str:
        return f"{self.name}=={self.version}"


def _wheel_tags(filename: str) -> frozenset[Tag]:
    return parse_wheel_filename(filename)[3]


def _best_wheel(name: str, wheels: list[dict], ranking: Mapping[Tag, int]) -> dict:
    scored = []
    for wheel in wheels:
        filename = wheel.get("name") or _filename_of(wheel)
        ranks = [ranking[t] for t in _wheel_tags(filename) if t in ranking]
        if ranks:
            scored.append((min(ranks), filename, wheel))
    if not scored:
        raise PlanError(f"the lock has no wheel of {name} that this computer can use")
    return min(scored, key=lambda s: s[0])[2]


def _filename_of(wheel: Mapping) -> str:
    where = wheel.get("url") or wheel.get("path")
    if not where:
        raise PlanError(f"a wheel in the lock has neither a url nor a path: {wheel}")
    return urllib.parse.unquote(re.split(r"[/\\]", where.split("#")[0])[-1])


def read_lock(path: Path, ranking: Mapping[Tag, int], environment: Mapping[str, str],
              base: Path | None = None) -> list[Wheel]:
    """Every package of a pylock.toml that applies here, with its best wheel."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PlanError(f"cannot read the lock file {path.name}: {exc}") from exc
    chosen = []
    for package in data.get("packages", []):
        marker = package.get("marker")
        if marker and not Marker(marker).evaluate(dict(environment)):
            continue
        name = canonicalize_name(package["name"])
        wheels = package.get("wheels") or []
        if not wheels:
            # A source-only package is built into a wheel when the installer is made and
            # carried in it; the lock still names it, the plan takes the carried wheel.
            continue
        wheel = _best_wheel(name, wheels, ranking)
        filename = wheel.get("name") or _filename_of(wheel)
        local = wheel.get("path")
        size = int(wheel.get("size") or 0)
        url = wheel.get("url") or ""
        if not size and url.startswith("file://"):
            # A wheel from a local folder (--find-links when the lock was made): the lock
            # gives no size; the file has one.
            size = _file_size(url)
        chosen.append(Wheel(
            name=name, version=str(package["version"]), filename=filename,
            size=size, sha256=wheel["hashes"]["sha256"],
            url=wheel.get("url"),
            path=((base or path.parent) / local) if local else None,
        ))
    return chosen


def _file_size(url: str) -> int:
    try:
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path)).stat().st_size
    except OSError:
        return 0


def carried_wheel(path: Path) -> Wheel:
    name, version, _, _ = parse_wheel_filename(path.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Wheel(name=canonicalize_name(name), version=str(version), filename=path.name,
                 size=path.stat().st_size, sha256=digest, path=path)


def tag_ranking(tags: Iterable[str | Tag]) -> dict[Tag, int]:
    """Tags in order of preference (as packaging.tags.sys_tags gives them) -> rank."""
    ranking: dict[Tag, int] = {}
    for tag in tags:
        for one in (parse_tag(tag) if isinstance(tag, str) else {tag}):
            ranking.setdefault(one, len(ranking))
    return ranking


def merge(*parts: Iterable[Wheel]) -> list[Wheel]:
    """One wheel per package; a later part replaces an earlier one (a torch build's lock
    over the app's, the carried wheels over both)."""
    by_name: dict[str, Wheel] = {}
    for part in parts:
        for wheel in part:
            by_name[wheel.name] = wheel
    return sorted(by_name.values(), key=lambda w: w.name)


def fingerprint(wheels: Iterable[Wheel]) -> str:
    """Names the exact set of wheels: equal fingerprints, equal environments."""
    text = "\n".join(sorted(f"{w.key} {w.sha256}" for w in wheels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
