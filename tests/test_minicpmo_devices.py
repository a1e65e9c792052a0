"""MiniCPM-o's speech path follows its modules' device (a CUDA run must not mix devices).

No GPU here, so two checks stand in for one (tests/test_gpu.py runs the whole speech
path on CUDA where there is one):

* where the TTS and the LLM decoder say they compute is their backbone's device, not
  their embedding tables' (beside a GPU those stay in system RAM and return rows on the
  GPU: place.HostEmbedding), shown by moving a backbone to the meta device;
* every tensor the speech path's code makes names its device (or is CPU-side on
  purpose, listed below with why), read from the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from app.model.minicpm_o.config import MiniCPMOConfig
from app.model.minicpm_o.tiny import tiny_config_dict

ROOT = Path(__file__).resolve().parents[1] / "app" / "model" / "minicpm_o"
SPEECH_PATH = ("tts.py", "live_voice.py", "speech.py", "duplex.py", "token2wav/stream.py",
               "token2wav/flow.py", "token2wav/dit.py", "token2wav/conformer.py",
               "token2wav/hift.py", "token2wav/vocoder_stream.py", "token2wav/prompt.py")
FACTORIES = {"tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "rand",
             "randn", "randint", "Generator", "hann_window", "from_numpy"}
# (file, function): tensors made on the CPU on purpose.
CPU_ON_PURPOSE = {
    ("token2wav/flow.py", "flow_noise"),  # the same noise on every machine; moved once
    ("duplex.py", "choose"),  # the token is drawn from a CPU copy of the logits
    ("duplex.py", "_model_ends_unit"),  # likewise, with the decoder's CPU generator
}


def _tiny() -> MiniCPMOConfig:
    return MiniCPMOConfig.from_dict(tiny_config_dict(), where="tiny")


def test_the_tts_computes_where_its_backbone_is_not_where_its_tables_are() -> None:
    from app.model.minicpm_o.tts import SpeechDecoder, SpeechStream

    decoder = SpeechDecoder(_tiny().tts)
    assert decoder.compute == (torch.device("cpu"), torch.float32)
    assert SpeechStream(decoder)._rng.device.type == "cpu"
    decoder.model.to(torch.float64)  # the backbone's float dtype, not a table's
    assert decoder.compute[1] == torch.float64 and decoder.emb_text.weight.dtype == torch.float32
    decoder.model.to("meta")  # the backbone elsewhere, the tables (emb_text) in RAM
    assert decoder.emb_text.weight.device.type == "cpu"
    assert decoder.compute[0].type == "meta"


def test_the_llm_decoder_names_the_device_it_computes_on() -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from app.model.minicpm_o.duplex import DuplexDecoder
    from app.model.minicpm_o.protocol import SpecialIds
    from app.model.minicpm_o.tiny import make_tokenizer

    text = _tiny().text
    llm = Qwen3ForCausalLM(Qwen3Config(**{k: getattr(text, k) for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim")}))
    decoder = DuplexDecoder(llm, SpecialIds.from_tokenizer(make_tokenizer()))
    llm.model.layers.to("meta")
    llm.model.norm.to("meta")
    assert llm.get_input_embeddings().weight.device.type == "cpu"
    assert decoder.device.type == "meta"


def undeviced_tensors(source: str, name: str) -> list[str]:
    """`torch.<factory>(...)` calls in `source` that name no device: "line: code"."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    owner = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                owner[node] = fn.name  # nested functions are walked later: innermost wins
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and node.func.attr in FACTORIES):
            continue
        if any(k.arg == "device" for k in node.keywords):
            continue
        function = owner.get(node, "")
        parent = parents.get(node)
        moved = (isinstance(parent, ast.Attribute) and parent.attr == "to")
        in_parameter = (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute)
                        and parent.func.attr == "Parameter")
        if moved or in_parameter or function == "__init__" or (name, function) in CPU_ON_PURPOSE:
            continue  # moved at once, or a module's own tensor (built where the module is)
        found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_every_tensor_the_speech_path_makes_names_its_device() -> None:
    found = []
    for name in SPEECH_PATH:
        found += undeviced_tensors((ROOT / name).read_text(encoding="utf-8"), name)
    assert not found, "tensors made on the CPU beside device tensors:\n" + "\n".join(found)


def test_the_source_check_sees_a_cpu_tensor() -> None:
    code = ("import torch\n"
            "def run(self, codes):\n"
            "    a = torch.tensor([codes], dtype=torch.int32)\n"
            "    b = torch.tensor([codes], device=self.device)\n"
            "    c = torch.from_numpy(x).to(self.device)\n")
    assert [f.split(": ", 1)[1] for f in undeviced_tensors(code, "x.py")] == [
        "torch.tensor([codes], dtype=torch.int32)"]
