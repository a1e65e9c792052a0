"""The token2wav flow's settings, read safely from the checkpoint's `flow.yaml`.

The published `assets/token2wav/flow.yaml` is a hyperpyyaml file: four `!new:` tags name
the Python classes to build (the flow model, its conformer encoder, the flow-matching
solver and its DiT estimator) and the mappings under them are their constructor
arguments. hyperpyyaml builds those objects by importing and calling whatever a tag
names, so it is never used here: a YAML safe loader that knows exactly those four tags
turns them into plain settings, and any other tag (`!name:`, `!ref`, `!apply:`,
`!!python/...`) is refused with a message naming it. A setting our port does not
implement (another attention or positional-encoding kind, say) is refused too rather
than silently ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

FLOW_TAG = "!new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec"
ENCODER_TAG = "!new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2"
SOLVER_TAG = "!new:cosyvoice2.flow.flow_matching.CausalConditionalCFM"
ESTIMATOR_TAG = "!new:cosyvoice2.flow.decoder_dit.DiT"
KNOWN_TAGS = (FLOW_TAG, ENCODER_TAG, SOLVER_TAG, ESTIMATOR_TAG)


class FlowYamlError(ValueError):
    """flow.yaml holds something this port does not read or cannot honour."""


@dataclass(frozen=True)
class EncoderConfig:
    """The upsampling conformer encoder (speech codes -> frames at twice their rate).

    Defaults are the reference constructor's, used only where flow.yaml is silent.
    """

    input_size: int = 512
    output_size: int = 256
    pre_lookahead_len: int = 3
    num_blocks: int = 6
    num_up_blocks: int = 4
    up_stride: int = 2
    up_scale_factor: float = 2.0
    attention_heads: int = 4
    key_bias: bool = True
    linear_units: int = 2048
    normalize_before: bool = True
    input_layer: str = "linear"
    pos_enc_layer_type: str = "rel_pos_espnet"
    selfattention_layer_type: str = "rel_selfattn"
    activation_type: str = "swish"
    # Training-only settings: read so that the file is accepted, unused at inference.
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0


@dataclass(frozen=True)
class EstimatorConfig:
    """The DiT that estimates the flow's velocity field."""

    in_channels: int = 320
    out_channels: int = 80
    mlp_ratio: float = 4.0
    depth: int = 28
    num_heads: int = 8
    head_dim: int = 64
    hidden_size: int = 256


@dataclass(frozen=True)
class FlowConfig:
    """The whole flow: code embedding, encoder, speaker projection, CFM solver + DiT."""

    encoder: EncoderConfig
    estimator: EstimatorConfig
    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    output_type: str = "mel"
    vocab_size: int = 5121
    inference_cfg_rate: float = 0.7

    def __post_init__(self) -> None:
        _check_supported(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def published_flow_config() -> FlowConfig:
    """The values of MiniCPM-o 4.5's assets/token2wav/flow.yaml (as other ports of the
    checkpoint validate the file against them), for plans and random full-size trees."""
    encoder = EncoderConfig(input_size=512, output_size=512, pre_lookahead_len=3,
                            num_blocks=6, num_up_blocks=4, up_stride=2, up_scale_factor=2.0,
                            attention_heads=8, key_bias=True, linear_units=2048,
                            attention_dropout_rate=0.1)
    estimator = EstimatorConfig(in_channels=320, out_channels=80, mlp_ratio=4.0, depth=16,
                                num_heads=8, head_dim=64, hidden_size=512)
    return FlowConfig(encoder=encoder, estimator=estimator, input_size=512, output_size=80,
                      spk_embed_dim=192, output_type="mel", vocab_size=6561,
                      inference_cfg_rate=0.7)


# What our port implements; any other value in flow.yaml is refused by name.
_SUPPORTED = {
    "input_layer": "linear",
    "pos_enc_layer_type": "rel_pos_espnet",
    "selfattention_layer_type": "rel_selfattn",
    "activation_type": "swish",
    "normalize_before": True,
    "output_type": "mel",
}


def _check_supported(config: FlowConfig) -> None:
    for owner in (config, config.encoder):
        for name, wanted in _SUPPORTED.items():
            if hasattr(owner, name) and getattr(owner, name) != wanted:
                raise FlowYamlError(f"flow.yaml sets {name}={getattr(owner, name)!r}; this "
                                    f"port implements only {wanted!r}")
    enc, est = config.encoder, config.estimator
    if enc.up_stride != 2:
        # The streaming caches hold the code-rate stack's frames twice over to line up with
        # the 2x frame-rate stack's (as the reference does); other rates do not line up.
        raise FlowYamlError(f"flow.yaml sets up_stride={enc.up_stride}; the streaming "
                            "caches of this port (and of the reference) need 2")
    if enc.up_scale_factor != enc.up_stride:
        raise FlowYamlError(f"flow.yaml sets up_scale_factor={enc.up_scale_factor} apart from "
                            f"up_stride={enc.up_stride}; this port needs them equal")
    if enc.output_size % enc.attention_heads:
        raise FlowYamlError(f"encoder output_size {enc.output_size} is not divisible by "
                            f"attention_heads {enc.attention_heads}")
    if est.in_channels != 4 * config.output_size:
        raise FlowYamlError(f"DiT in_channels {est.in_channels} must be 4 x output_size "
                            f"{config.output_size} (noise, encoder output, speaker, prompt)")
    if est.out_channels != config.output_size:
        raise FlowYamlError(f"DiT out_channels {est.out_channels} differs from the flow's "
                            f"output_size {config.output_size}")
    if config.inference_cfg_rate <= 0:
        raise FlowYamlError("inference_cfg_rate must be > 0 (the solver always applies "
                            "classifier-free guidance)")


@dataclass(frozen=True)
class _Tagged:
    """A mapping under one of the four known tags, not yet checked."""

    tag: str
    fields: dict[str, Any]


class _FlowLoader(yaml.SafeLoader):
    """SafeLoader plus the four published tags; builds nothing but plain data."""


def _construct_tagged(loader: _FlowLoader, node: yaml.Node) -> _Tagged:
    if not isinstance(node, yaml.MappingNode):
        raise FlowYamlError(f"flow.yaml: {node.tag} must hold a mapping of settings")
    return _Tagged(node.tag, loader.construct_mapping(node, deep=True))


def _refuse(loader: _FlowLoader, suffix: str, node: yaml.Node) -> Any:
    raise FlowYamlError(f"flow.yaml uses the tag {node.tag!r} (line {node.start_mark.line + 1}); "
                        "only the four published component tags are read, nothing that "
                        "names other code or references is executed")


for _tag in KNOWN_TAGS:
    _FlowLoader.add_constructor(_tag, _construct_tagged)
_FlowLoader.add_multi_constructor("!", _refuse)
_FlowLoader.add_multi_constructor("tag:yaml.org,2002:python/", _refuse)


def parse_flow_yaml(text: str) -> FlowConfig:
    """flow.yaml's text -> FlowConfig; FlowYamlError names what is wrong."""
    try:
        document = yaml.load(text, Loader=_FlowLoader)
    except yaml.YAMLError as exc:
        raise FlowYamlError(f"flow.yaml is not readable YAML: {exc}") from exc
    if not isinstance(document, dict) or "flow" not in document:
        raise FlowYamlError("flow.yaml has no top-level 'flow' entry")
    flow = _expect(document["flow"], FLOW_TAG, "flow")
    decoder = _expect(flow.pop("decoder", None), SOLVER_TAG, "flow.decoder")
    encoder = _expect(flow.pop("encoder", None), ENCODER_TAG, "flow.encoder")
    estimator = _expect(decoder.pop("estimator", None), ESTIMATOR_TAG, "flow.decoder.estimator")
    if "input_embedding" in flow:
        raise FlowYamlError("flow.yaml sets flow.input_embedding; this port builds the "
                            "code embedding itself")
    flow.update(decoder)  # the solver's only own setting is inference_cfg_rate
    return FlowConfig(encoder=_build(EncoderConfig, encoder, "flow.encoder"),
                      estimator=_build(EstimatorConfig, estimator, "flow.decoder.estimator"),
                      **_known(FlowConfig, flow, "flow", skip={"encoder", "estimator"}))


def read_flow_yaml(path: Path) -> FlowConfig:
    return parse_flow_yaml(Path(path).read_text(encoding="utf-8"))


def _expect(value: Any, tag: str, where: str) -> dict[str, Any]:
    if not isinstance(value, _Tagged):
        raise FlowYamlError(f"flow.yaml: {where} must be a mapping tagged {tag}")
    if value.tag != tag:
        raise FlowYamlError(f"flow.yaml: {where} is tagged {value.tag}, expected {tag}")
    return dict(value.fields)


def _known(cls: type, values: dict[str, Any], where: str, skip: set[str] = frozenset()) -> dict:
    names = {f.name for f in fields(cls)} - skip
    unknown = sorted(set(values) - names)
    if unknown:
        raise FlowYamlError(f"flow.yaml: {where} has settings this port does not know: "
                            f"{', '.join(unknown)}")
    out = {}
    for f in fields(cls):
        if f.name in values:
            out[f.name] = _typed(values[f.name], f.type, f"{where}.{f.name}")
    return out


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    return cls(**_known(cls, values, where))


def _typed(value: Any, type_name: str, where: str) -> Any:
    kinds = {"int": int, "float": float, "bool": bool, "str": str}
    kind = kinds[type_name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise FlowYamlError(f"flow.yaml: {where} = {value!r} is not a {type_name}")
    return value


def flow_yaml_text(config: FlowConfig) -> str:
    """A flow.yaml in the published layout (the same four tags) for `config`."""
    data = config.to_dict()
    enc, est = data.pop("encoder"), data.pop("estimator")
    cfg_rate = data.pop("inference_cfg_rate")

    def block(values: dict[str, Any], indent: int) -> list[str]:
        pad = " " * indent
        return [f"{pad}{k}: {_scalar(v)}" for k, v in values.items()]

    lines = [f"flow: {FLOW_TAG}", *block(data, 4),
             f"    encoder: {ENCODER_TAG}", *block(enc, 8),
             f"    decoder: {SOLVER_TAG}", f"        inference_cfg_rate: {_scalar(cfg_rate)}",
             f"        estimator: {ESTIMATOR_TAG}", *block(est, 12)]
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return f"'{value}'"
    return repr(value)
