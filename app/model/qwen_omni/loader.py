"""Loading a Qwen2.5-Omni checkpoint: folder checks, quantization, device placement.

Everything that can fail for a reason the user can fix (missing file, too little
memory, a quantization this machine cannot run) becomes a BackendError before or while
the weights load; the model code below this never sees a half-loaded model.

What is quantized, what stays in system RAM and which dtype each part gets is the
placement rule's (placement.py), the same rule the memory plan counts; the plan is
checked against the free memory before any weight is read (fit.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from app.model import checkpoint, fit, hf_load, memory_plan, quant
from app.model.contract import BackendError, ModelSource, Progress, Quant
from app.model.memory_plan import Plan
from app.model.placement import Placement, float_prefixes
from app.model.qwen_omni import antialias, speaker_encoding
from app.model.qwen_omni.tiny import DUETTO_META

log = logging.getLogger(__name__)

FAMILY = "qwen2.5-omni"
# Modules whose Linears the placement rule keeps in floating point (placement.py); the
# loader asks the rule itself (Placement.skip_modules), this names them for reference.
SKIP_MODULES = float_prefixes(FAMILY)


@dataclass
class Loaded:
    model: torch.nn.Module  # Qwen2_5OmniForConditionalGeneration
    tokenizer: object
    folder: Path
    device: torch.device
    dtype: torch.dtype
    quant: Quant
    min_answer_tokens: int  # from duetto.json (tiny models); 0 for real checkpoints
    answer_codes: int = 0  # from duetto.json (tiny models): the shortest answer's speech
    flow_steps: int | None = None  # token2wav's ODE steps from duetto.json (tiny models)
    plan: Plan | None = None  # the memory plan it was loaded under (memory_plan.py)
    placement: Placement | None = None
    context_note: str = ""  # which context was chosen, and why


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


def load(
    source: ModelSource, q: Quant, progress: Progress, *, device: str | None = None,
    context: int | None = None, talker_headroom: int | None = None,
) -> Loaded:
    """Load a checkpoint as the placement rule says, after the memory plan said it fits.

    `context`: the conversation's tokens (the backend's token budget); None picks the
    longest the device's free memory holds. The plan is checked before any weight moves.
    """
    from transformers import AutoConfig, AutoTokenizer, Qwen2_5OmniForConditionalGeneration

    device = device or default_device()
    ok, why = quant.quant_support(q, device)
    if not ok:
        raise BackendError(f"{q.value} cannot run on {device} here: {why}",
                           hint="pick another quantization (bf16 always works)")
    folder = resolve_folder(source, progress)
    checkpoint.validate_checkpoint(folder, family=FAMILY)
    config = AutoConfig.from_pretrained(folder)
    sized, placement, skel = prepare(config, q, device, context, talker_headroom,
                                     name=str(folder))
    meta = read_meta(folder)
    progress("loading weights", 0.1)
    context_text = f"loading {FAMILY} from {folder}"
    try:
        model = hf_load.from_pretrained(Qwen2_5OmniForConditionalGeneration, placement, skel,
                                        folder=folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except BackendError:
        raise
    except Exception as exc:
        raise checkpoint.explain_load_error(exc, context_text) from exc
    if not getattr(model, "has_talker", False):
        raise BackendError(
            f"{folder} has no talker (enable_audio_output is off)",
            hint="use the full Qwen2.5-Omni checkpoint, which speaks",
        )
    if not model.speaker_map:
        raise BackendError(f"{folder}/spk_dict.pt holds no speakers",
                           hint="re-download spk_dict.pt from the model repository")
    antialias.for_cpu(model.token2wav)
    speaker_encoding.for_cpu(model.token2wav)
    progress("loaded", 1.0)
    return Loaded(
        model=model,
        tokenizer=tokenizer,
        folder=folder,
        device=torch.device(device),
        dtype=placement.float_dtype,
        quant=q,
        min_answer_tokens=int(meta.get("min_answer_tokens", 0) or 0),
        answer_codes=int(meta.get("answer_codes", 0) or 0),
        flow_steps=int(meta["flow_steps"]) if meta.get("flow_steps") else None,
        plan=sized.plan,
        placement=placement,
        context_note=sized.note,
    )


def load_random(size: str, q: Quant, *, device: str = "cuda", context: int | None = None,
                talker_headroom: int | None = None, seed: int = 0) -> Loaded:
    """The published 3B or 7B architecture (sizes.py) with random weights (bench gpu)."""
    from app.model.qwen_omni.sizes import REAL_SPECIAL_IDS, full_size_config, random_speakers
    from app.model.qwen_omni.tiny import make_tokenizer

    config = full_size_config(size)
    return load_generated(config, make_tokenizer(REAL_SPECIAL_IDS), random_speakers(config), q,
                          device=device, context=context, talker_headroom=talker_headroom,
                          name=f"random qwen2.5-omni {size}", seed=seed)


def load_generated(config, tokenizer, speakers: dict, q: Quant, *, device: str,
                   context: int | None = None, talker_headroom: int | None = None,
                   name: str = "random", seed: int = 0) -> Loaded:
    """`config`'s architecture with random weights made on `device`, loaded the way a
    checkpoint is (the placement rule, its quantization, the fit check)."""
    from transformers import Qwen2_5OmniForConditionalGeneration

    from app.model import random_weights

    sized, placement, skel = prepare(config, q, device, context, talker_headroom, name=name)
    weights = random_weights.state_dict(skel, device, placement.float_dtype,
                                        on_cpu=tuple(hf_load.cpu_modules(placement, skel)),
                                        seed=seed)
    model = hf_load.from_pretrained(Qwen2_5OmniForConditionalGeneration, placement, skel,
                                    config=config, state_dict=weights)
    model.speaker_map = dict(speakers)
    antialias.for_cpu(model.token2wav)
    speaker_encoding.for_cpu(model.token2wav)
    return Loaded(model=model, tokenizer=tokenizer, folder=Path(f"<{name}>"),
                  device=torch.device(device), dtype=placement.float_dtype, quant=q,
                  min_answer_tokens=0, plan=sized.plan, placement=placement,
                  context_note=sized.note)


def prepare(config, q: Quant, device: str, context: int | None, talker_headroom: int | None,
            *, name: str, free: int | None = None) -> tuple[fit.Sized, Placement, torch.nn.Module]:
    """The plan (fit-checked against the free memory: BackendError if it does not fit),
    the placement and the module tree without memory, before any weight is read."""
    dtype = quant.torch_dtype(q, device)
    skel = memory_plan.skeleton(FAMILY, config, dtype)
    placement = Placement.for_device(FAMILY, q, device, skel)
    planner = memory_plan.Planner(FAMILY, config, device=device, float_dtype=dtype, name=name,
                                  talker_headroom=talker_headroom, skeleton_model=skel)
    return fit.size(planner, q, context, device, free=free), placement, skel
