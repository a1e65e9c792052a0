"""Loading a Qwen2.5-Omni checkpoint: folder checks, quantization, device placement.

Everything that can fail for a reason the user can fix (missing file, too little
memory, a quantization this machine cannot run) becomes a BackendError before or while
the weights load; the model code below this never sees a half-loaded model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from app.model import checkpoint, quant
from app.model.contract import BackendError, ModelSource, Progress, Quant
from app.model.qwen_omni.tiny import DUETTO_META

log = logging.getLogger(__name__)

FAMILY = "qwen2.5-omni"
# Kept in floating point under int8/nf4: the talker and token2wav are small and
# precision-sensitive (token2wav must run in float32), the output heads are small.
SKIP_MODULES = ("talker", "token2wav", "lm_head", "codec_head", "thinker_to_talker_proj")


@dataclass
class Loaded:
    model: torch.nn.Module  # Qwen2_5OmniForConditionalGeneration
    tokenizer: object
    folder: Path
    device: torch.device
    dtype: torch.dtype
    quant: Quant
    min_answer_tokens: int  # from duetto.json (tiny models); 0 for real checkpoints


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_folder(source: ModelSource, progress: Progress) -> Path:
    """A local folder as is; a hub id through huggingface_hub's cache or download."""
    if source.local_dir is not None:
        folder = Path(source.local_dir).expanduser()
        if not folder.is_dir():
            raise BackendError(
                f"model folder {folder} does not exist",
                hint="pick the folder that holds config.json and the weights",
            )
        return folder
    if not source.hub_id:
        raise BackendError("no model given", hint="pass a local folder or a hub id")
    progress(f"fetching {source.describe()}", 0.0)
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id=source.hub_id, revision=source.revision)
    except Exception as exc:  # network, auth, missing repo: all reach the user as text
        raise BackendError(
            f"could not fetch {source.describe()}: {type(exc).__name__}: {exc}",
            hint="check the network and the model id, or download it and pass its folder",
        ) from exc
    return Path(path)


def read_meta(folder: Path) -> dict:
    path = folder / DUETTO_META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"{path} is not valid JSON ({exc})", hint="rebuild the tiny model"
        ) from exc
    return meta if isinstance(meta, dict) else {}


def _skip_modules(folder: Path, q: Quant, device: str) -> list[str]:
    """SKIP_MODULES plus every Linear bitsandbytes cannot take on this device."""
    skip = list(SKIP_MODULES)
    if q is not Quant.NF4:
        return skip
    from accelerate import init_empty_weights
    from transformers import AutoConfig, Qwen2_5OmniForConditionalGeneration

    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights():
        skeleton = Qwen2_5OmniForConditionalGeneration(config)
    return skip + quant.unquantizable_linears(skeleton, q, device=device)


def load(
    source: ModelSource, q: Quant, progress: Progress, *, device: str | None = None
) -> Loaded:
    from transformers import AutoTokenizer, Qwen2_5OmniForConditionalGeneration

    device = device or default_device()
    ok, why = quant.quant_support(q, device)
    if not ok:
        raise BackendError(f"{q.value} cannot run on {device} here: {why}",
                           hint="pick another quantization (bf16 always works)")
    folder = resolve_folder(source, progress)
    checkpoint.validate_checkpoint(folder, family=FAMILY)
    checkpoint.check_fits(checkpoint.estimate_weight_bytes(folder, q), device)
    meta = read_meta(folder)
    dtype = quant.torch_dtype(q, device)
    progress("loading weights", 0.1)
    context = f"loading {FAMILY} from {folder}"
    try:
        bnb = quant.bnb_config(q, _skip_modules(folder, q, device), device=device)
        kwargs = {"dtype": dtype, "device_map": {"": device}}
        if bnb is not None:
            kwargs["quantization_config"] = bnb
        model = Qwen2_5OmniForConditionalGeneration.from_pretrained(folder, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except BackendError:
        raise
    except Exception as exc:
        raise checkpoint.explain_load_error(exc, context) from exc
    if not getattr(model, "has_talker", False):
        raise BackendError(
            f"{folder} has no talker (enable_audio_output is off)",
            hint="use the full Qwen2.5-Omni checkpoint, which speaks",
        )
    if not model.speaker_map:
        raise BackendError(f"{folder}/spk_dict.pt holds no speakers",
                           hint="re-download spk_dict.pt from the model repository")
    # token2wav's flow-matching ODE and vocoder are only correct in float32.
    model.token2wav.float()
    model.eval()
    progress("loaded", 1.0)
    return Loaded(
        model=model,
        tokenizer=tokenizer,
        folder=folder,
        device=torch.device(device),
        dtype=dtype,
        quant=q,
        min_answer_tokens=int(meta.get("min_answer_tokens", 0) or 0),
    )


def from_memory(model, tokenizer, q: Quant = Quant.BF16, min_answer_tokens: int = 0) -> Loaded:
    """Wrap a model built in memory (benchmarks' random full-size models) like a load."""
    param = next(model.thinker.parameters())
    model.token2wav.float()
    model.eval()
    return Loaded(
        model=model,
        tokenizer=tokenizer,
        folder=Path("<memory>"),
        device=param.device,
        dtype=param.dtype,
        quant=q,
        min_answer_tokens=min_answer_tokens,
    )
