"""The checkpoints Duetto knows, as data, and the record of which ones are downloaded.

Every figure says where it came from (`source`): the model card, the weights' file
sizes on the Hub, or our own calculation from parameter counts (marked "estimate").
After `duetto models get`, the exact commit fetched is written to a manifest in the
models folder, so later runs load the same files even when the Hub's branch moves on.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app import paths
from app.model import families
from app.model.checkpoint import NF4_BYTES_PER_PARAM
from app.model.contract import BackendError, ModelSource, Quant

GB = 1e9
GIB = 1024**3


def _vram(
    linear_b: float, other_b: float, overhead_gb: float, *, bf16_gb: float | None = None
) -> dict[Quant, float]:
    """GiB needed per quant: weights + a working overhead (cache, activations).

    `linear_b`: billions of parameters in Linear layers (what bitsandbytes quantizes);
    `other_b`: the rest (embeddings, norms, convolutions), held in 16-bit whatever the
    quant. `bf16_gb`, when a model card gives the 16-bit figure, replaces the computed one.
    """

    def gib(weights_gb: float) -> float:
        return round((weights_gb + overhead_gb) * GB / GIB, 1)

    sixteen = round(bf16_gb * GB / GIB, 1) if bf16_gb else gib((linear_b + other_b) * 2)
    return {
        Quant.BF16: sixteen,
        Quant.FP16: sixteen,
        Quant.INT8: gib(linear_b * 1 + other_b * 2),
        Quant.NF4: gib(linear_b * NF4_BYTES_PER_PARAM + other_b * 2),
    }


@dataclass(frozen=True)
class RegistryEntry:
    """One checkpoint on the Hugging Face Hub.

    `format`: "transformers" (config.json + safetensors that transformers' classes load)
    or "moshi" (the `moshi` package's own single-file format). `download_gb` is decimal
    GB, as the Hub shows sizes; `vram_gib` is binary GiB, as GPUs are sold.
    """

    id: str
    hub_id: str
    family: str
    format: str
    license: str
    download_gb: float
    vram_gib: Mapping[Quant, float] = field(hash=False, compare=False)
    source: str
    gated: bool = False
    note: str = ""

    @property
    def supported(self) -> bool:
        """Whether this app can run it now: a backend for its family, in its format."""
        formats = _LOADABLE_FORMATS.get(self.family, ("transformers",))
        return families.is_supported(self.family) and self.format in formats


# Formats each family's loader reads besides transformers' own: the Moshi backend maps
# the moshi package's layout (Kyutai's and NVIDIA's checkpoints) at load time.
_LOADABLE_FORMATS: dict[str, tuple[str, ...]] = {"moshi": ("transformers", "moshi")}


_MOSHI_OVERHEAD_GB = 2.6  # estimate: KV cache for 3000 frames × 32 layers × 4096 × bf16 + act.

ENTRIES: tuple[RegistryEntry, ...] = (
    RegistryEntry(
        id="qwen2.5-omni-3b",
        hub_id="Qwen/Qwen2.5-Omni-3B",
        family="qwen2.5-omni",
        format="transformers",
        license="Qwen Research License (non-commercial)",
        download_gb=11.3,
        # card: 18.38 GB in BF16 for a 15 s video; weights ≈ 5.6 B params (estimate:
        # 3.1 B LLM + 0.31 B untied head + 0.68 B vision + 0.64 B audio + talker and
        # token2wav ≈ 0.9 B), so the working overhead is 18.38 − 11.3 ≈ 7.1 GB.
        vram_gib=_vram(4.9, 0.7, 7.1, bf16_gb=18.38),
        source=(
            "BF16 VRAM: model card (18.38 GB, 15 s video, also quoted by codersera.com); "
            "download size and INT8/NF4 VRAM: estimate from parameter counts; license: "
            "model card as remembered (license_name qwen-research), not re-checked here"
        ),
    ),
    RegistryEntry(
        id="qwen2.5-omni-7b",
        hub_id="Qwen/Qwen2.5-Omni-7B",
        family="qwen2.5-omni",
        format="transformers",
        license="Apache-2.0",
        download_gb=22.4,
        # 5 shards: 4.99 + 4.99 + 4.99 + 4.97 + 2.43 GB = 22.37 GB of bf16 ≈ 11.2 B params,
        # of which ≈ 1.3 B are embeddings/heads (152064 × 3584 twice, talker, vocoder).
        vram_gib=_vram(9.9, 1.3, 31.11 - 22.37, bf16_gb=31.11),
        source=(
            "download: the weights' safetensors total on the Hub (5 shards, 22.37 GB); "
            "BF16 VRAM: model card (31.11 GB, 15 s video); INT8/NF4 VRAM: estimate "
            "(card overhead + quantized weights); license: Hub tag and LICENSE file"
        ),
    ),
    RegistryEntry(
        id="moshiko-hf",
        hub_id="kmhf/hf-moshiko",
        family="moshi",
        format="transformers",
        license="CC-BY-4.0",
        download_gb=15.6,
        vram_gib=_vram(7.3, 0.5, _MOSHI_OVERHEAD_GB),
        source=(
            "download: the 4-shard bf16 set on the Hub (4.97 + 4.93 + 4.97 + 0.70 GB); "
            "VRAM: estimate from 7.8 B params + KV cache; license: kyutai's moshiko "
            "weights (CC-BY-4.0), of which this is transformers' conversion"
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
        vram_gib=_vram(7.3, 0.5, _MOSHI_OVERHEAD_GB),
        source=(
            "download: the Hub's file list (model.safetensors 15.4 GB + Mimi 385 MB + "
            "tokenizer); license: Hub tag; VRAM: estimate from 7.8 B params + KV cache"
        ),
    ),
    RegistryEntry(
        id="personaplex-7b",
        hub_id="nvidia/personaplex-7b-v1",
        family="moshi",
        format="moshi",
        license="NVIDIA Open Model License (+CC-BY-4.0)",
        download_gb=16.7,
        vram_gib=_vram(7.87, 0.5, _MOSHI_OVERHEAD_GB),
        source=(
            "license: model card (governing terms NVIDIA Open Model License, additional "
            "CC-BY-4.0); 8.37 B params and 16.7 GB bf16: third-party pages describing the "
            "checkpoint; VRAM: estimate from params + KV cache"
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
        download_gb=18.8,
        # ≈ 9.4 B params: Qwen3-8B 8.2 B + SigLIP2 0.4 B + Whisper-medium encoder 0.3 B +
        # 0.3 B speech decoder + token2wav ≈ 0.2 B (estimate).
        vram_gib=_vram(8.1, 1.3, 28.0 - 18.8, bf16_gb=28.0),
        source=(
            "license: OpenBMB's repositories (FACTS.md); BF16 VRAM: the official demo's "
            ">28 GB (FACTS.md); download and INT8/NF4: estimate from parameter counts"
        ),
        note="runs through its remote code pinned to transformers 4.51; not supported yet",
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
