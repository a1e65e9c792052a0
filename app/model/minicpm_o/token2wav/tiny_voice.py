"""Tiny random voice encoders with the published files' names, inputs, outputs and rates.

`write_tiny_voice_encoders(folder, seed)` writes `speech_tokenizer_v2_25hz.onnx` and
`campplus.onnx` into `folder`, built from ONNX operators here (no download, no export):

* the tokenizer: inputs `feats` [1, 128, frames] float32 and `feats_length` [1] int32,
  output `indices` [1, codes] int32; the published front: two convolutions of kernel 3
  and stride 2 (100 mel frames a second -> 25 codes a second, codes = ceil(frames / 4)),
  GELU, then the published quantiser: a projection to 8 values, tanh, each rounded to
  one of 3 levels, read as a base-3 number (6,561 codes). The published transformer
  blocks between them are left out: nothing here depends on them.
* CAM++: input `feature` [1, frames, 80] float32, output `embedding` [1, 192] float32;
  a convolution, ReLU, mean-and-deviation pooling over time, a projection to 192.

The names are the ones the published files are exported with (the speech tokenizer's as
CosyVoice's frontends feed it, CAM++'s as 3D-Speaker's export script names them); our
reader takes them from the session, so only their order matters to it. Weights come from
one seeded generator: the same seed writes the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from app.model.minicpm_o.token2wav.voice_encoders import SPEAKER_ENCODER_FILE, SPEECH_TOKENIZER_FILE

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime 1.21 (the reference environment) and later
TOKENIZER_MELS = 128
TOKENIZER_WIDTH = 16
FSQ_DIGITS, FSQ_LEVELS = 8, 3
SPEAKER_MELS = 80
SPEAKER_WIDTH = 16
SPEAKER_DIM = 192


def _const(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _normal(gen: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return gen.standard_normal(shape).astype(np.float32)


def _gelu(helper, x: str, out: str) -> list:
    """x * 0.5 * (1 + erf(x / sqrt 2)) (GELU in opset 17 operators)."""
    return [
        helper.make_node("Div", [x, "sqrt2"], [f"{out}_s"]),
        helper.make_node("Erf", [f"{out}_s"], [f"{out}_e"]),
        helper.make_node("Add", [f"{out}_e", "one"], [f"{out}_p"]),
        helper.make_node("Mul", [x, f"{out}_p"], [f"{out}_m"]),
        helper.make_node("Mul", [f"{out}_m", "half"], [out]),
    ]


def _save(model, path: Path) -> None:
    import onnx

    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _tokenizer(gen: np.random.Generator):
    from onnx import TensorProto, helper

    c, m = TOKENIZER_WIDTH, TOKENIZER_MELS
    inits = [
        _const("conv1.weight", _normal(gen, (c, m, 3)) / math.sqrt(3 * m)),
        _const("conv1.bias", 0.02 * gen.standard_normal(c).astype(np.float32)),
        _const("conv2.weight", _normal(gen, (c, c, 3)) / math.sqrt(3 * c)),
        _const("conv2.bias", 0.02 * gen.standard_normal(c).astype(np.float32)),
        # Wide enough that tanh spreads over all three levels.
        _const("project_down.weight",
               6.0 * gen.standard_normal((c, FSQ_DIGITS)).astype(np.float32) / math.sqrt(c)),
        _const("project_down.bias", 0.1 * gen.standard_normal(FSQ_DIGITS).astype(np.float32)),
        _const("powers", (FSQ_LEVELS ** np.arange(FSQ_DIGITS)).astype(np.float32)),
        _const("sqrt2", np.array(math.sqrt(2.0), dtype=np.float32)),
        _const("one", np.array(1.0, dtype=np.float32)),
        _const("half", np.array(0.5, dtype=np.float32)),
        _const("level_scale", np.array((FSQ_LEVELS - 1) / 2.0, dtype=np.float32)),
    ]
    conv = {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}
    nodes = [
        helper.make_node("Conv", ["feats", "conv1.weight", "conv1.bias"], ["c1"], **conv),
        *_gelu(helper, "c1", "g1"),
        helper.make_node("Conv", ["g1", "conv2.weight", "conv2.bias"], ["c2"], **conv),
        *_gelu(helper, "c2", "g2"),
        helper.make_node("Transpose", ["g2"], ["hidden"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["hidden", "project_down.weight"], ["down"]),
        helper.make_node("Add", ["down", "project_down.bias"], ["down_b"]),
        helper.make_node("Tanh", ["down_b"], ["squashed"]),
        helper.make_node("Add", ["squashed", "one"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "level_scale"], ["scaled"]),
        helper.make_node("Round", ["scaled"], ["digits"]),
        helper.make_node("MatMul", ["digits", "powers"], ["code"]),
        helper.make_node("Cast", ["code"], ["indices"], to=TensorProto.INT32),
    ]
    graph = helper.make_graph(
        nodes, "tiny_speech_tokenizer_v2_25hz",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, m, "frames"]),
         helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("indices", TensorProto.INT32, [1, "codes"])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="duetto tiny_voice")


def _speaker(gen: np.random.Generator):
    from onnx import TensorProto, helper

    c, m = SPEAKER_WIDTH, SPEAKER_MELS
    inits = [
        _const("conv.weight", gen.standard_normal((c, m, 3)).astype(np.float32) / math.sqrt(3 * m)),
        _const("conv.bias", 0.02 * gen.standard_normal(c).astype(np.float32)),
        _const("dense.weight",
               gen.standard_normal((2 * c, SPEAKER_DIM)).astype(np.float32) / math.sqrt(2 * c)),
        _const("dense.bias", 0.02 * gen.standard_normal(SPEAKER_DIM).astype(np.float32)),
        _const("eps", np.array(1e-5, dtype=np.float32)),
    ]
    nodes = [
        helper.make_node("Transpose", ["feature"], ["x"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["h"], kernel_shape=[3],
                         pads=[1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["mean"], axes=[2], keepdims=1),
        helper.make_node("Sub", ["r", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["var"], axes=[2], keepdims=0),
        helper.make_node("Add", ["var", "eps"], ["var_e"]),
        helper.make_node("Sqrt", ["var_e"], ["std"]),
        helper.make_node("Squeeze", ["mean", "axis2"], ["mean_s"]),
        helper.make_node("Concat", ["mean_s", "std"], ["stats"], axis=1),
        helper.make_node("MatMul", ["stats", "dense.weight"], ["proj"]),
        helper.make_node("Add", ["proj", "dense.bias"], ["embedding"]),
    ]
    inits.append(_const("axis2", np.array([2], dtype=np.int64)))
    graph = helper.make_graph(
        nodes, "tiny_campplus",
        [helper.make_tensor_value_info("feature", TensorProto.FLOAT, [1, "frames", m])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, SPEAKER_DIM])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="duetto tiny_voice")


def write_tiny_voice_encoders(folder: Path, seed: int = 0) -> Path:
    """Write the two tiny encoders into `folder` (created if needed); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    _save(_tokenizer(gen), folder / SPEECH_TOKENIZER_FILE)
    _save(_speaker(gen), folder / SPEAKER_ENCODER_FILE)
    return folder
