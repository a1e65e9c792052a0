"""The checkpoints Duetto knows, as data, and the record of which ones are downloaded.

Every figure says where it came from (`source`): the model card or the weights' file
sizes on the Hub. GPU memory is not kept here: it is each entry's memory plan
(memory_plan.py), from its published architecture (published.py) and the app's own
quantization rule.
After `duetto models get`, the exact commit fetched is written to a manifest in the
models folder, so later runs load the same files even when the Hub's branch moves on.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app import paths
from app.model import families
from app.model.contract import BackendError, ModelSource, Quant

GB = 1e9
GIB = 1024**3


def plan_vram_gib(entry_id: str) -> Mapping[Quant, float]:
    """GiB of GPU memory per quantization for a registry entry, from its memory plan at
    the family's default context on a card with native bf16 (memory_plan.py); empty for
    an entry the app cannot run. Computed when first read, once per entry (a few seconds
    for a 7B: the module tree is built on the meta device)."""
    return PlannedVram(entry_id)


class PlannedVram(Mapping):
    """A registry entry's GiB per quantization, planned on first use."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id

    def _figures(self) -> dict[Quant, float]:
        return dict(_plan_vram_gib(self.entry_id))

    def __getitem__(self, q: Quant) -> float:
        return self._figures()[q]

    def __iter__(self):
        return iter(self._figures())

    def __len__(self) -> int:
        return len(self._figures())

    def __repr__(self) -> str:
        return f"PlannedVram({self.entry_id!r})"


@functools.cache
def _plan_vram_gib(entry_id: str) -> tuple[tuple[Quant, float], ...]:
    from app.model import memory_plan, published

    if not published.known(entry_id):
        return ()
    planner = memory_plan.planner_for_entry(entry_id)
    return tuple((q, round(planner.plan(q).total_gib, 2)) for q in Quant)


@dataclass(frozen=True)
class RegistryEntry:
    """One checkpoint on the Hugging Face Hub.

    `format`: "transformers" (config.json + safetensors that transformers' classes load)
    or "moshi" (the `moshi` package's own single-file format). `download_gb` is decimal
    GB, as the Hub shows sizes; `vram_gib` is binary GiB, from the memory plan.
    """

    id: str
    hub_id: str
    family: str
    format: str
    license: str
    download_gb: float
    source: str
    gated: bool = False
    note: str = ""

    @property
    def vram_gib(self) -> Mapping[Quant, float]:
        """GiB of GPU memory per quantization (memory plan, default context); {} when the
        app has no plan for it."""
        return plan_vram_gib(self.id)

    @property
    def supported(self) -> bool:
        """Whether this app can run it now: a backend for its family, in its format."""
        formats = _LOADABLE_FORMATS.get(self.family, ("transformers",))
        return families.is_supported(self.family) and self.format in formats


# Formats each family's loader reads besides transformers' own: the Moshi backend maps
# the moshi package's layout (Kyutai's and NVIDIA's checkpoints) at load time.
_LOADABLE_FORMATS: dict[str, tuple[str, ...]] = {"moshi": ("transformers", "moshi")}


ENTRIES: tuple[RegistryEntry, ...] = (
    RegistryEntry(
        id="qwen2.5-omni-3b",
        hub_id="Qwen/Qwen2.5-Omni-3B",
        family="qwen2.5-omni",
        format="transformers",
        license="Qwen Research License (non-commercial)",
        download_gb=11.3,
        source=(
            "download size: estimate from parameter counts; license: model card as "
            "remembered (license_name qwen-research), not re-checked here"
        ),
    ),
    RegistryEntry(
        id="qwen2.5-omni-7b",
        hub_id="Qwen/Qwen2.5-Omni-7B",
        family="qwen2.5-omni",
        format="transformers",
        license="Apache-2.0",
        download_gb=22.4,
        # 5 shards: 4.99 + 4.99 + 4.99 + 4.97 + 2.43 GB = 22.37 GB of bf16.
        source=(
            "download: the weights' safetensors total on the Hub (5 shards, 22.37 GB); "
            "license: Hub tag and LICENSE file"
        ),
    ),
    RegistryEntry(
        id="moshiko-hf",
        hub_id="kmhf/hf-moshiko",
        family="moshi",
        format="transformers",
        license="CC-BY-4.0",
        download_gb=15.6,
        source=(
            "download: the 4-shard bf16 set on the Hub (4.97 + 4.93 + 4.97 + 0.70 GB); "
            "license: kyutai's moshiko weights (CC-BY-4.0), of which this is "
            "transformers' conversion"
        ),
        note=(
            "the repo's main branch also holds a second 7-shard copy; a full snapshot "
            "fetches both"
        ),
    ),
    RegistryEntry(
        id="moshiko",
        hub_id="kyutai/moshiko-pytorch-bf16",
        family="moshi",
        format="moshi",
        license="CC-BY-4.0",
        download_gb=15.8,
        source=(
            "download: the Hub's file list (model.safetensors 15.4 GB + Mimi 385 MB + "
            "tokenizer); license: Hub tag"
        ),
    ),
    RegistryEntry(
        id="personaplex-7b",
        hub_id="nvidia/personaplex-7b-v1",
        family="moshi",
        format="moshi",
        license="NVIDIA Open Model License (+CC-BY-4.0)",
        download_gb=16.7,
        source=(
            "license: model card (governing terms NVIDIA Open Model License, additional "
            "CC-BY-4.0); 8.37 B params and 16.7 GB bf16: third-party pages describing the "
            "checkpoint"
        ),
        gated=True,
        note="gated: accept the terms on the model page and log in (`hf auth login`)",
    ),
    RegistryEntry(
        id="minicpm-o-4.5",
        hub_id="openbmb/MiniCPM-o-4_5",
        family="minicpm-o",
        format="transformers",
        license="Apache-2.0",
        download_gb=20.0,
        source=(
            "license: OpenBMB's repositories; download: estimate from parameter counts "
            "(about 9.4 B, 18.8 GB in bf16) and the speech vocoder's files (assets/token2wav, "
            "about 1.2 GB)"
        ),
        note="our own port (no remote code); speaks in the persona's recorded voice",
    ),
)

_BY_ID: dict[str, RegistryEntry] = {entry.id: entry for entry in ENTRIES}


def entries() -> tuple[RegistryEntry, ...]:
    return ENTRIES


def get(model_id: str) -> RegistryEntry:
    """The entry for `model_id`; BackendError listing the known ids when there is none."""
    try:
        return _BY_ID[model_id]
    except KeyError:
        raise BackendError(
            f"unknown model id {model_id!r}",
            hint=f"known ids: {', '.join(_BY_ID)} (see `duetto models list`), or pass a "
            "local folder with --model DIR",
        ) from None


# --- the manifest of downloads ---------------------------------------------------------

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class CachedModel:
    id: str
    hub_id: str
    revision: str
    local_dir: Path
    fetched_at: float


def manifest_path() -> Path:
    return paths.models_dir() / MANIFEST_NAME


def local_dir_for(entry: RegistryEntry) -> Path:
    return paths.models_dir() / entry.id


def _read_manifest() -> dict[str, dict]:
    path = manifest_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackendError(
            f"the download record {path} cannot be read ({exc})",
            hint="delete it; `duetto models get ID` writes it again (finished files are kept)",
        ) from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise BackendError(
            f"the download record {path} is not in the expected form",
            hint="delete it; `duetto models get ID` writes it again (finished files are kept)",
        )
    return models


def _write_manifest(models: dict[str, dict]) -> None:
    path = manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"version": MANIFEST_VERSION, "models": models}, indent=1)
    # Write then rename: a crash mid-write must not lose the record of other downloads.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_download(entry: RegistryEntry, local_dir: Path, revision: str) -> CachedModel:
    """Remember that `entry` at commit `revision` is complete in `local_dir`."""
    models = _read_manifest()
    record = {
        "hub_id": entry.hub_id,
        "revision": revision,
        "local_dir": str(Path(local_dir).resolve()),
        "fetched_at": time.time(),
    }
    models[entry.id] = record
    _write_manifest(models)
    return _to_cached(entry.id, record)


def _to_cached(model_id: str, record: dict) -> CachedModel:
    return CachedModel(
        id=model_id,
        hub_id=str(record.get("hub_id", "")),
        revision=str(record.get("revision", "")),
        local_dir=Path(str(record.get("local_dir", ""))),
        fetched_at=float(record.get("fetched_at", 0.0)),
    )


def cached() -> list[CachedModel]:
    """Downloads recorded in the manifest whose folders still exist, in registry order."""
    models = _read_manifest()
    order = {entry.id: i for i, entry in enumerate(ENTRIES)}
    found = [
        _to_cached(model_id, record)
        for model_id, record in models.items()
        if isinstance(record, dict) and Path(str(record.get("local_dir", ""))).is_dir()
    ]
    return sorted(found, key=lambda c: (order.get(c.id, len(order)), c.id))


def resolve(model_id: str) -> ModelSource:
    """The local folder and pinned revision of a downloaded model."""
    entry = get(model_id)
    record = _read_manifest().get(entry.id)
    if not isinstance(record, dict):
        raise BackendError(
            f"{entry.id} is not downloaded",
            hint=f"run `duetto models get {entry.id}` ({entry.download_gb:.1f} GB), or pass "
            "a local folder with --model DIR",
        )
    found = _to_cached(entry.id, record)
    if not found.local_dir.is_dir():
        raise BackendError(
            f"{entry.id} was downloaded to {found.local_dir}, which no longer exists",
            hint=f"run `duetto models get {entry.id}` again",
        )
    return ModelSource(local_dir=found.local_dir, hub_id=entry.hub_id, revision=found.revision)
