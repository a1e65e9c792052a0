"""Checks on a checkpoint folder before loading it, and load failures made readable.

Loading a multi-GB model takes a minute; finding out afterwards that a shard is missing
or the GPU is too small wastes it and shows a traceback. These checks read only small
files (config.json, the safetensors index, each shard's JSON header) and answer in
milliseconds with a BackendError that says what is wrong and what to do.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from app.model.contract import BackendError

log = logging.getLogger(__name__)

GIB = 1024**3

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


@dataclass(frozen=True)
class FileRule:
    """Files a family needs beside its weights.

    `alternatives` lists ways to satisfy the rule; one is enough, and every file in
    that one must exist. `why` tells the user what the file is for.
    """

    alternatives: tuple[tuple[str, ...], ...]
    why: str

    def describe(self) -> str:
        return " or ".join(" + ".join(files) for files in self.alternatives)


@dataclass(frozen=True)
class FamilyCheckpoint:
    """What a family's checkpoint folder looks like in transformers' format."""

    architectures: frozenset[str]
    model_types: frozenset[str]
    required: tuple[FileRule, ...] = ()
    how_to_get: str = ""


_QWEN_TOKENIZER = FileRule(
    # Qwen2Tokenizer's files (transformers' tokenization_qwen2.VOCAB_FILES_NAMES): the
    # fast tokenizer.json alone, or the BPE pair it can be rebuilt from.
    alternatives=(("tokenizer.json",), ("vocab.json", "merges.txt")),
    why="the text tokenizer",
)

# One row per family. Only the families with a backend are used by the app today;
# the others are listed so a folder of theirs gets a precise answer, not a guess.
FAMILY_CHECKPOINTS: dict[str, FamilyCheckpoint] = {
    "qwen2.5-omni": FamilyCheckpoint(
        architectures=frozenset(
            {"Qwen2_5OmniForConditionalGeneration", "Qwen2_5OmniModel"}
        ),
        model_types=frozenset({"qwen2_5_omni"}),
        required=(
            # Qwen2_5OmniForConditionalGeneration.from_pretrained loads it after the
            # weights and fails without it (transformers' modeling code).
            FileRule(
                alternatives=(("spk_dict.pt",),),
                why="the built-in speakers' voice conditioning",
            ),
            _QWEN_TOKENIZER,
        ),
        how_to_get="the full Qwen/Qwen2.5-Omni-3B or -7B repository",
    ),
    "moshi": FamilyCheckpoint(
        architectures=frozenset({"MoshiForConditionalGeneration"}),
        model_types=frozenset({"moshi"}),
        required=(
            # The inner-monologue text: a tokenizer.json, or Kyutai's SentencePiece file.
            FileRule(
                alternatives=(("tokenizer.json",), ("tokenizer_spm_32k_3.model",),
                              ("tokenizer.model",)),
                why="the text tokenizer",
            ),
        ),
        # The moshi package's layout (kyutai/moshiko-pytorch-bf16, nvidia/personaplex-7b-v1)
        # has no transformers config.json; app/model/moshi/loader.py checks those folders.
        how_to_get="kmhf/hf-moshiko (transformers' format)",
    ),
    "minicpm-o": FamilyCheckpoint(
        architectures=frozenset({"MiniCPMO"}),
        model_types=frozenset({"minicpmo"}),
        # The published folder ships Qwen2's BPE files with MiniCPM-o's added tokens.
        required=(_QWEN_TOKENIZER,),
        how_to_get="the full openbmb/MiniCPM-o-4_5 repository",
    ),
}


def _known_families() -> str:
    return ", ".join(sorted(FAMILY_CHECKPOINTS))


def _family_rules(family: str) -> FamilyCheckpoint:
    try:
        return FAMILY_CHECKPOINTS[family]
    except KeyError:
        raise BackendError(
            f"unknown model family {family!r}",
            hint=f"known families: {_known_families()}",
        ) from None


def _read_json(path: Path, what: str, folder: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(
            f"{folder} has no {path.name}",
            hint=f"{what} is missing: copy the whole checkpoint folder, not only its weights",
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackendError(
            f"{path} cannot be read ({type(exc).__name__}: {exc})",
            hint="the file is damaged: download or copy the checkpoint again",
        ) from None
    if not isinstance(data, dict):
        raise BackendError(
            f"{path} does not hold a JSON object",
            hint="the file is damaged: download or copy the checkpoint again",
        )
    return data


def _check_architecture(config: dict, family: str, rules: FamilyCheckpoint, folder: Path) -> None:
    architectures = config.get("architectures") or []
    if isinstance(architectures, str):
        architectures = [architectures]
    model_type = config.get("model_type")
    if rules.architectures.intersection(architectures) or model_type in rules.model_types:
        return
    found = ", ".join(map(str, architectures)) or "no architectures"
    expected = ", ".join(sorted(rules.architectures))
    owner = next(
        (
            name
            for name, other in FAMILY_CHECKPOINTS.items()
            if other.architectures.intersection(architectures)
            or model_type in other.model_types
        ),
        None,
    )
    hint = (
        f"this looks like a {owner} checkpoint: choose that family"
        if owner
        else f"point to a {family} checkpoint ({rules.how_to_get})"
    )
    raise BackendError(
        f"{folder} holds a {found} model (model_type {model_type!r}); "
        f"a {family} checkpoint has {expected} (model_type "
        f"{', '.join(sorted(rules.model_types))})",
        hint=hint,
    )


def weight_files(folder: Path) -> list[Path]:
    """The weight files a folder's index names, or its loose weight files.

    Raises BackendError when an index names shards that are absent, or when there are
    no weights at all.
    """
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index_path = folder / index_name
        if not index_path.exists():
            continue
        index = _read_json(index_path, "the weight index", folder)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise BackendError(
                f"{index_path} has no weight_map",
                hint="the index is damaged: download or copy the checkpoint again",
            )
        shards = sorted(set(map(str, weight_map.values())))
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                              else "")
            raise BackendError(
                f"{folder} lacks {len(missing)} of the {len(shards)} weight shards its "
                f"index names: {shown}",
                hint="the download or copy was interrupted: run `duetto models get` again "
                "(it resumes) or copy the missing files",
            )
        return [folder / name for name in shards]
    loose = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not loose:
        raise BackendError(
            f"{folder} holds no weights (no {SAFETENSORS_INDEX}, *.safetensors or "
            "pytorch_model.bin)",
            hint="the download or copy is incomplete: run `duetto models get` again or copy "
            "the whole folder",
        )
    return loose


def _check_required_files(folder: Path, family: str, rules: FamilyCheckpoint) -> None:
    for rule in rules.required:
        if any(all((folder / f).is_file() for f in files) for files in rule.alternatives):
            continue
        raise BackendError(
            f"{folder} lacks {rule.describe()} ({rule.why}), which a {family} checkpoint needs",
            hint=f"copy it from {rules.how_to_get}",
        )


def validate_checkpoint(folder: Path, family: str) -> None:
    """Raise BackendError (cause + hint) unless `folder` looks like a loadable checkpoint.

    Checks, cheapest first: the folder exists; config.json reads; its architecture is
    the family's; the weights are all there, each .safetensors file as long as its
    header says (headers only: a download that stopped early is named here, not deep
    inside loading); the family's other files are there.
    """
    rules = _family_rules(family)
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise BackendError(
            f"model folder {folder} does not exist",
            hint="check the path, or download a model with `duetto models get ID`",
        )
    if not folder.is_dir():
        raise BackendError(
            f"{folder} is a file, not a model folder",
            hint="point to the folder that holds config.json",
        )
    config = _read_json(folder / "config.json", "the model's config.json", folder)
    _check_architecture(config, family, rules, folder)
    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            read_safetensors_header(path)  # raises for a file cut short
    _check_required_files(folder, family, rules)


# --- the weights' files, read without loading them --------------------------------------

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of one .safetensors file: name -> {dtype, shape, data_offsets}.

    Reads 8 + header bytes, never the tensors.
    """
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise ValueError("file shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            size = path.stat().st_size
            if length > _MAX_HEADER or length + 8 > size:
                raise ValueError(f"header length {length} does not fit a {size}-byte file")
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise BackendError(
            f"{path} is not a readable safetensors file ({exc})",
            hint="the file is damaged or incomplete: download or copy it again",
        ) from None
    if not isinstance(header, dict):
        raise BackendError(f"{path} has a malformed safetensors header",
                           hint="download or copy it again")
    header.pop("__metadata__", None)
    _check_complete(path, header, 8 + length, size)
    return header


_TORCH_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def _check_complete(path: Path, header: dict, data_start: int, size: int) -> None:
    """The tensors the header lists must all lie inside the file: a download or copy that
    stopped early leaves a good header over missing data, which would otherwise fail
    only deep inside loading, as a parser error."""
    ends = [entry.get("data_offsets", [0, 0])[-1] for entry in header.values()
            if isinstance(entry, dict)]
    needed = data_start + max((int(end) for end in ends if isinstance(end, int)), default=0)
    if needed > size:
        raise BackendError(
            f"{path.name} in {path.parent} is cut short: it holds {size:,} of the "
            f"{needed:,} bytes its header lists",
            hint="the download or copy stopped early: run `duetto models get` again (it "
            "resumes) or copy the file again",
        )


def mmap_safetensors(path: Path) -> dict:
    """The tensors of a .safetensors file as CPU tensors over a private memory map.

    Nothing is read until a tensor is used, and what is read stays in the page cache
    (the system can drop it) until written: a loader can rename, slice and move a 16 GB
    file tensor by tensor without holding a copy of it in RAM.
    """
    import mmap

    import torch

    header = read_safetensors_header(path)
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    start = 8 + length
    tensors = {}
    for name, info in header.items():
        try:
            dtype = getattr(torch, _TORCH_DTYPES[str(info["dtype"])])
            begin, end = (int(x) for x in info["data_offsets"])
            shape = [int(d) for d in info["shape"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BackendError(f"{path} has a malformed or unsupported entry for tensor {name!r}",
                               hint="the file is damaged: download or copy it again") from None
        if end == begin:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(mapped, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                offset=start + begin)
        tensors[name] = flat.view(shape)
    return tensors


def header_tensors(path: Path) -> dict:
    """The tensors of a .safetensors file as meta tensors: names, shapes, dtypes, no data."""
    import torch

    tensors = {}
    for name, info in read_safetensors_header(path).items():
        dtype = getattr(torch, _TORCH_DTYPES.get(str(info.get("dtype")), "float32"))
        tensors[name] = torch.empty([int(d) for d in info["shape"]], dtype=dtype, device="meta")
    return tensors


# --- will it fit -----------------------------------------------------------------------


def available_bytes(device: str) -> int:
    """Free memory where weights would go: free VRAM on CUDA, available RAM on CPU."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(
                f"device {device!r} was asked for but torch sees no CUDA GPU",
                hint="check the NVIDIA driver and that torch is a CUDA build, or use --device cpu",
            )
        index = torch.device(device).index
        free, _total = torch.cuda.mem_get_info(index)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


# --- load failures ---------------------------------------------------------------------

_OOM_MARKERS = ("out of memory", "cuda error: out of memory", "cublas_status_alloc_failed")
_CORRUPT_MARKERS = (
    "headertoolarge",
    "headertoosmall",
    "invalidheader",
    "metadataincompletebuffer",
    "incomplete metadata",
    "error while deserializing header",
)
_MISSING_MARKERS = ("no such file", "does not appear to have a file named", "not exists",
                    "can't load", "couldn't find")


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def _is_safetensors_error(exc: BaseException) -> bool:
    if type(exc).__name__ == "SafetensorError" or type(exc).__module__.startswith("safetensors"):
        return True
    text = str(exc).lower()
    return any(m in text for m in _CORRUPT_MARKERS)


def explain_load_error(exc: BaseException, context: str) -> BackendError:
    """Turn an exception raised while `context` (e.g. "loading qwen2.5-omni-7b") into a
    BackendError with a cause and a hint. The traceback goes to the log, not the user."""
    if isinstance(exc, BackendError):
        return exc
    log.error("%s failed", context, exc_info=exc)
    detail = f"{type(exc).__name__}: {exc}".strip()
    if len(detail) > 300:
        detail = detail[:297] + "..."
    if _is_oom(exc):
        return BackendError(
            f"out of GPU memory while {context}",
            hint="pick a smaller model or a lower quantization (int8, nf4), or close other "
            "programs using the GPU",
        )
    if isinstance(exc, MemoryError):
        return BackendError(
            f"out of system memory (RAM) while {context}",
            hint="close other programs, or pick a smaller model or a lower quantization",
        )
    missing_file = isinstance(exc, FileNotFoundError) or (
        isinstance(exc, OSError | ValueError)
        and any(m in str(exc).lower() for m in _MISSING_MARKERS)
    )
    if missing_file:
        missing = getattr(exc, "filename", None)
        what = f": {missing}" if missing else f" ({detail})"
        return BackendError(
            f"a file the model needs is missing while {context}{what}",
            hint="the checkpoint folder is incomplete: download it again with `duetto models "
            "get ID` or copy the whole folder",
        )
    if _is_safetensors_error(exc):
        return BackendError(
            f"a weight file is damaged or incomplete while {context} ({detail})",
            hint="run `duetto models get ID` again (it resumes and repairs), or copy the "
            "folder again",
        )
    return BackendError(
        f"{context} failed ({detail})",
        hint="the full traceback is in the log",
    )
