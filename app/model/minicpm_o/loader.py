"""Loading a MiniCPM-o checkpoint strictly: every tensor the tree has, nothing else.

The published checkpoint is 4 safetensors shards with `model.safetensors.index.json`,
config.json (model_type "minicpmo") and the tokenizer with its added special tokens.
The module tree is built on the meta device; the shards are memory-mapped; any tensor
the tree lacks, any it has that the files lack, a wrong shape, or an index that
disagrees with the shards is a BackendError naming the tensor or file. Then each
tensor is placed as the project's placement rule says (placement.py: quantized Linears,
embeddings in system RAM beside a GPU, the float dtype of the device).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.model import checkpoint
from app.model import quant as quant_lib
from app.model.building import building
from app.model.contract import BackendError, Quant
from app.model.memory_plan import Plan
from app.model.minicpm_o.config import MiniCPMOConfig
from app.model.minicpm_o.model import MiniCPMO
from app.model.place import place
from app.model.placement import Placement

log = logging.getLogger(__name__)

FAMILY = "minicpm-o"
_SHOWN = 5  # names listed in an error message


@dataclass
class LoadedMiniCPMO:
    model: MiniCPMO  # eval mode, placed
    tokenizer: object
    config: MiniCPMOConfig
    folder: Path
    device: torch.device
    dtype: torch.dtype
    quant: Quant
    placement: Placement
    plan: Plan | None = None  # the memory plan it was loaded under (memory_plan.py)
    context_note: str = ""  # which window (tokens) was chosen, and why
    # The speech path (speech.py): token2wav/stream.Token2Wav on the device, the voice
    # prompts of recordings (token2wav/voice_cache.VoiceCache), the voices shipped.
    token2wav: Any = None
    voices: Any = None
    builtin_voices: dict[str, Path] = field(default_factory=dict)


def skeleton(config: MiniCPMOConfig, dtype: torch.dtype = torch.float32) -> MiniCPMO:
    """The module tree with its parameters on the meta device (buffers real), in eval mode."""
    from accelerate import init_empty_weights

    with building(dtype), init_empty_weights(include_buffers=False):
        model = MiniCPMO(config)
    return model.eval()


def expected_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def check_keys(expected: Mapping[str, tuple[int, ...]],
               found: Mapping[str, tuple[int, ...] | None], folder: Path) -> None:
    """BackendError naming every missing or unexpected tensor, or a wrong shape.

    `found` maps each tensor the checkpoint has to its shape (None: not read yet, names
    only)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listed(missing)}")
    if extra:
        problems.append(f"unexpected {len(extra)} tensor(s): {_listed(extra)}")
    wrong = [f"{k} {found[k]} (expected {expected[k]})" for k in sorted(expected)
             if found.get(k) is not None and tuple(found[k]) != tuple(expected[k])]
    if wrong:
        problems.append(f"{len(wrong)} wrong shape(s): {_listed(wrong)}")
    if problems:
        raise BackendError(f"{folder}'s weights do not match MiniCPM-o's module tree: "
                           + "; ".join(problems),
                           hint="this is not a MiniCPM-o 4.5 checkpoint, or its files are "
                           "damaged: download it again")


def dropped_vision_layer(config: MiniCPMOConfig, names) -> list[str]:
    """Tensors of the SigLIP layer the official tree drops (drop_vision_last_layer).

    The official code builds every layer the vision config names, then removes the last
    one, and loads with transformers' from_pretrained, which passes over file tensors it
    has no place for. A checkpoint may therefore hold that layer (llama.cpp-omni's
    converter reads 27 layers from the files); it is recognised by name and not loaded.
    Any other tensor without a place stays an error.
    """
    if not config.drop_vision_last_layer:
        return []
    prefix = f"vpm.encoder.layers.{config.vision.num_hidden_layers - 1}."
    return sorted(n for n in names if n.startswith(prefix))


def read_index(folder: Path) -> dict[str, str]:
    """The index's tensor -> shard map (BackendError when absent or damaged)."""
    path = folder / checkpoint.SAFETENSORS_INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(f"{folder} has no {checkpoint.SAFETENSORS_INDEX}",
                           hint="the published checkpoint has 4 shards and their index: "
                           "download it again") from None
    except (OSError, ValueError) as exc:
        raise BackendError(f"{path} cannot be read ({exc})",
                           hint="download the checkpoint again") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise BackendError(f"{path} has no weight_map", hint="download the checkpoint again")
    return {str(k): str(v) for k, v in weight_map.items()}


def read_shards(folder: Path, weight_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Every tensor of every shard the index names, memory-mapped; the index and the
    shards must agree tensor for tensor."""
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        if not path.is_file():
            raise BackendError(f"{folder} lacks the shard {shard} its index names",
                               hint="the download was interrupted: download it again")
        tensors = checkpoint.mmap_safetensors(path)
        listed = {k for k, v in weight_map.items() if v == shard}
        absent = sorted(listed - set(tensors))
        unlisted = sorted(set(tensors) - listed)
        if absent or unlisted:
            what = []
            if absent:
                what.append(f"lacks {_listed(absent)} that the index places there")
            if unlisted:
                what.append(f"holds {_listed(unlisted)} that the index does not place there")
            raise BackendError(f"{path} {'; '.join(what)}",
                               hint="the index and the shards are from different downloads: "
                               "download the checkpoint again")
        state.update(tensors)
    return state


def load_tokenizer(folder: Path):
    """The Qwen2 BPE tokenizer with the checkpoint's added tokens (tokenizer.json).

    The published tokenizer_config.json names a remote-code class (a thin wrapper around
    Qwen2's fast tokenizer), so the class is given here instead of asked of AutoTokenizer.
    """
    from transformers import Qwen2Tokenizer
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "tokenizer class differs from the config's": known
    try:
        return Qwen2Tokenizer.from_pretrained(folder)
    except Exception as exc:  # any tokenizer file problem reaches the user as text
        raise BackendError(f"the tokenizer in {folder} cannot be loaded "
                           f"({type(exc).__name__}: {exc})",
                           hint="download tokenizer.json and tokenizer_config.json again"
                           ) from exc
    finally:
        hf_logging.set_verbosity(previous)


def vocoder_files(folder: Path) -> dict[str, tuple[int, bool]] | None:
    """The speech vocoder's files beside the checkpoint (assets/token2wav/): name ->
    (bytes, held on the GPU), as the memory plan counts them; None when there are none."""
    from app.model.minicpm_o.sizes import TOKEN2WAV_FILES

    assets = folder / "assets" / "token2wav"
    found = {name: ((assets / name).stat().st_size, gpu)
             for name, (_, gpu) in TOKEN2WAV_FILES.items() if (assets / name).is_file()}
    return found or None


def fit_plan(folder: Path, config: MiniCPMOConfig, q: Quant, device: str, dtype: torch.dtype,
             model: MiniCPMO, context: int | None, free: int | None):  # -> fit.Sized
    """The memory plan for this folder (weights by the placement rule, the LLM window's
    cache, the speech vocoder's files), checked against the free memory: BackendError
    when it does not fit, before any weight is read."""
    from app.model import fit, memory_plan

    planner = memory_plan.Planner(FAMILY, config, device=device, float_dtype=dtype,
                                  name=str(folder), skeleton_model=model,
                                  vocoder_files=vocoder_files(folder))
    return fit.size(planner, q, context, device, free=free)


def load_minicpmo(folder: Path | str, *, device: str = "cpu", quant: Quant | None = None,
                  context: int | None = None, free: int | None = None) -> LoadedMiniCPMO:
    """Read a MiniCPM-o checkpoint folder strictly into our module tree on `device`.

    `context`: the LLM's window in tokens (None: the longest the free memory holds, up to
    the model's maximum); `free`: the free bytes to plan against (default: asked of the
    device). The plan is checked before any weight is read."""
    q = quant or Quant.BF16
    ok, why = quant_lib.quant_support(q, device)
    if not ok:
        raise BackendError(f"{q.value} cannot run on {device} here: {why}",
                           hint="pick another quantization (bf16 always works)")
    folder = Path(folder).expanduser()
    checkpoint.validate_checkpoint(folder, family=FAMILY)
    config = MiniCPMOConfig.from_folder(folder)
    tokenizer = load_tokenizer(folder)  # small: a broken one is named before the weights
    weight_map = read_index(folder)
    dtype = quant_lib.torch_dtype(q, device)
    model = skeleton(config, dtype)
    expected = expected_shapes(model)
    unused = dropped_vision_layer(config, weight_map)
    if unused:
        log.info("%s: %d tensors of the vision layer the official model drops are not "
                 "loaded (%s ...)", folder, len(unused), unused[0])
    wanted = {k: v for k, v in weight_map.items() if k not in set(unused)}
    check_keys(expected, dict.fromkeys(wanted), folder)  # names, before any read
    sized = fit_plan(folder, config, q, device, dtype, model, context, free)
    state = read_shards(folder, weight_map)
    for name in unused:
        del state[name]
    check_keys(expected, {k: tuple(v.shape) for k, v in state.items()}, folder)
    loaded = _assemble(model, state, config, tokenizer, folder, q, device, dtype, sized,
                       from_file=True)
    from app.model.minicpm_o import speech

    speech.attach_speech(loaded, folder, device)
    return loaded


def load_random(q: Quant, *, device: str = "cuda", context: int | None = None,
                seed: int = 0, config: MiniCPMOConfig | None = None) -> LoadedMiniCPMO:
    """The published architecture (sizes.py) with random weights, loaded the way a
    checkpoint is: the same plan and fit check first, then each tensor made in system
    memory (where a checkpoint's memory-mapped shards are) and placed by the placement
    rule, quantized on its way to `device` (`duetto bench gpu`). `config`: another
    architecture than the published one (tests use the tiny one)."""
    from app.model import fit, memory_plan, random_weights
    from app.model.minicpm_o import sizes
    from app.model.minicpm_o.tiny import make_tokenizer

    ok, why = quant_lib.quant_support(q, device)
    if not ok:
        raise BackendError(f"{q.value} cannot run on {device} here: {why}",
                           hint="pick another quantization (bf16 always works)")
    config = config or sizes.config()
    dtype = quant_lib.torch_dtype(q, device)
    model = skeleton(config, dtype)
    folder = Path("<random minicpm-o 4.5>")
    planner = memory_plan.Planner(FAMILY, config, device=device, float_dtype=dtype,
                                  name=str(folder), skeleton_model=model,
                                  vocoder_files=dict(sizes.TOKEN2WAV_FILES))
    sized = fit.size(planner, q, context, device)
    lazy = random_weights.state_dict(model, "cpu", dtype, seed=seed)
    state = {name: t[...] for name, t in lazy.items()}
    return _assemble(model, state, config, make_tokenizer(), folder, q, device, dtype, sized,
                     from_file=False)



def _assemble(model: MiniCPMO, state: dict[str, torch.Tensor], config: MiniCPMOConfig,
              tokenizer: object, folder: Path, q: Quant, device: str, dtype: torch.dtype,
              sized, *, from_file: bool) -> LoadedMiniCPMO:
    """Fill the meta tree with `state` and place it (quantizing) on `device`."""
    try:
        model.load_state_dict(state, assign=True, strict=True)
        del state
        placement = Placement.for_device(FAMILY, q, device, model)
        place(model, placement, device, from_file=from_file)
    except Exception as exc:  # out of memory, a damaged file: said plainly, logged in full
        raise checkpoint.explain_load_error(exc, f"loading {FAMILY} from {folder}") from exc
    return LoadedMiniCPMO(model=model.eval(), tokenizer=tokenizer, config=config,
                          folder=folder, device=torch.device(device), dtype=dtype, quant=q,
                          placement=placement, plan=sized.plan, context_note=sized.note)
