"""The published checkpoints' tensor names and shapes, mapped through Duetto's loaders.

The lists in tests/data/keylists/ come from sources Duetto did not write (each file says
which and how; scripts/moshi_reference.py and scripts/transformers_keylists.py remake
them). Every check runs on meta tensors of the listed shapes: no weights, seconds.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

import pytest
import torch

from app.model.contract import BackendError
from app.model.moshi import loader as moshi_loader
from app.model.qwen_omni import loader as qwen_loader
from app.model.qwen_omni import sizes

KEYLISTS = Path(__file__).parent / "data" / "keylists"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"


def _record(name: str) -> dict:
    return json.loads(gzip.decompress((KEYLISTS / f"{name}.json.gz").read_bytes()))


def _meta(shapes: dict[str, list[int]], dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, dtype=dtype, device="meta")
            for name, shape in shapes.items()}


def _shapes(state) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in state.items()}


def _assert_same(got: dict, want: dict) -> None:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = {k: (got[k], want[k]) for k in want if tuple(got[k]) != tuple(want[k])}
    assert not wrong, f"shapes differ: {list(wrong.items())[:5]}"


def _meta_model(cls, config):
    with torch.device("meta"):
        return cls(config)


# --- the moshi package's layout (Kyutai's moshiko, NVIDIA's PersonaPlex) ------------------


def _moshi_layout(record: dict) -> tuple[object, dict[str, torch.Tensor]]:
    """What Duetto's moshi-layout loader builds from these files: its config and state."""
    files = record["files"]
    lm = _meta(files["model.safetensors"]["tensors"])
    mimi = _meta(files[MIMI_FILE]["tensors"], torch.float32)
    config = moshi_loader.moshi_layout_config(lm, mimi, {})
    return config, moshi_loader.moshi_layout_state(lm, mimi, config)


@functools.cache
def _mapped(name: str) -> tuple[object, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(config, Duetto's mapped state, transformers' Moshi state for that config)."""
    from transformers import MoshiForConditionalGeneration

    config, state = _moshi_layout(_record(name))
    return config, state, _meta_model(MoshiForConditionalGeneration, config).state_dict()


@pytest.mark.parametrize("name", ["moshiko.moshi", "personaplex-7b.moshi"])
def test_moshi_layout_lists_map_onto_the_model(name: str) -> None:
    """Kyutai's (and NVIDIA's) own trees, through Duetto's moshi-layout mapping: every
    tensor of transformers' Moshi is filled, nothing is left over, every shape fits."""
    config, state, expected = _mapped(name)
    moshi_loader.check_state(expected, state, Path(name))  # the loader's own check
    _assert_same(_shapes(state), _shapes(expected))
    assert config.hidden_size == 4096 and config.num_hidden_layers == 32
    assert config.audio_encoder_config.num_quantizers == 32


@pytest.mark.parametrize("name", ["moshiko.moshi", "personaplex-7b.moshi"])
def test_moshi_layout_equals_transformers_moshiko(name: str) -> None:
    """Two independent references agree through Duetto's mapping: Kyutai's tree, renamed
    and reshaped by layout.py, is tensor for tensor transformers' tree built from the
    kmhf/hf-moshiko configuration (PersonaPlex: the same architecture)."""
    from transformers import MoshiConfig, MoshiForConditionalGeneration

    _, state, _ = _mapped(name)
    hf = _record("hf-moshiko")
    model = _meta_model(MoshiForConditionalGeneration, MoshiConfig(**hf["config"]))
    _assert_same(_shapes(state), _shapes(model.state_dict()))


def test_personaplex_with_an_eight_step_depth_transformer_maps_too() -> None:
    """PersonaPlex's loader also takes a file whose depth transformer holds only the 8
    steps of the model's own voice (it copies them to steps 8..15): Duetto uses steps
    0..7 only, so such a file must map the same."""
    from transformers import MoshiForConditionalGeneration

    record = _record("personaplex-7b.moshi")
    tensors = dict(record["files"]["model.safetensors"]["tensors"])
    for name in list(tensors):
        parts = name.split(".")
        user_step = (parts[0] in ("linears", "depformer_in", "depformer_emb")
                     and int(parts[1]) >= 8)
        user_gating = parts[0] == "depformer" and parts[3] == "gating" and int(parts[4]) >= 8
        if user_step or user_gating:
            del tensors[name]
        elif name.startswith("depformer.layers.") and ".self_attn." in name:
            tensors[name] = [tensors[name][0] // 2, tensors[name][1]]
    record["files"]["model.safetensors"]["tensors"] = tensors
    config, state = _moshi_layout(record)
    model = _meta_model(MoshiForConditionalGeneration, config)
    _assert_same(_shapes(state), _shapes(model.state_dict()))


def test_a_list_that_does_not_fit_is_refused_clearly() -> None:
    """The check that guards the lists above does fail: one tensor of a wrong shape."""
    _, mapped, expected = _mapped("moshiko.moshi")
    state = dict(mapped)
    name = "decoder.model.layers.0.mlp.fc1.weight"
    state[name] = torch.empty(1, 1, device="meta")
    with pytest.raises(BackendError, match=r"unexpected shapes: decoder\.model\.layers\.0\.mlp"):
        moshi_loader.check_state(expected, state, Path("x"))
    del state[name]
    with pytest.raises(BackendError, match="missing"):
        moshi_loader.check_state(expected, state, Path("x"))


# --- transformers' layout (kmhf/hf-moshiko, Qwen2.5-Omni 3B and 7B) ---------------------


def _as_loaded(model, file_names: dict[str, list[int]]) -> dict[str, list[int]]:
    """The file's names as `from_pretrained` renames them into the module tree (the
    renaming transformers applies when Duetto's loaders call it)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    meta = model.state_dict()
    out = {}
    for name, shape in file_names.items():
        new, _ = rename_source_key(name, renamings, converters,
                                   model.base_model_prefix, meta)
        out[new] = shape
    return out


def test_hf_moshiko_list_loads_into_the_transformers_model() -> None:
    from transformers import MoshiConfig

    record = _record("hf-moshiko")
    model = _meta_model(moshi_loader._mimi_in_float32(), MoshiConfig(**record["config"]))
    files = record["files"]["model-*.safetensors"]["tensors"]
    _assert_same(_as_loaded(model, files), _shapes(model.state_dict()))
    # What the loader keeps out of quantization names real modules of this checkpoint.
    for prefix in moshi_loader.SKIP_MODULES:
        assert any(n.startswith(prefix + ".") or f".{prefix}." in n for n in files), prefix


@pytest.mark.parametrize("size", ["3B", "7B"])
def test_qwen_list_loads_into_the_model(size: str) -> None:
    """The published file names (thinker.audio_tower.*, thinker.visual.*, ...) become
    exactly the model's tensors when loaded, and Duetto's own full-size configuration
    (used by the benchmarks and the memory figures) builds that very model."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    record = _record(f"qwen2.5-omni-{size.lower()}")
    files = record["files"]["model-*.safetensors"]["tensors"]
    published = _meta_model(Qwen2_5OmniForConditionalGeneration,
                            Qwen2_5OmniConfig(**record["config"]))
    _assert_same(_as_loaded(published, files), _shapes(published.state_dict()))
    ours = _meta_model(Qwen2_5OmniForConditionalGeneration, sizes.full_size_config(size))
    _assert_same(_shapes(ours.state_dict()), _shapes(published.state_dict()))
    for prefix in qwen_loader.SKIP_MODULES:
        assert any(n.startswith(prefix + ".") or f".{prefix}." in n for n in files), prefix
