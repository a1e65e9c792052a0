"""MiniCPM-o's port: the tiny checkpoint, the strict loader, frames and audio in.

The tiny checkpoint is random; these tests check layout, shapes, strictness and the
streaming bookkeeping. Equality with OpenBMB's own code is tests/test_minicpmo_conformance.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.model import quant
from app.model.contract import BackendError
from app.model.minicpm_o import tiny
from app.model.minicpm_o.loader import load_minicpmo
from tests.minicpmo_tiny import tiny_folder, tiny_loaded

INDEX = "model.safetensors.index.json"


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _speech(seconds: float, seed: int = 1) -> np.ndarray:
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    noise = np.random.default_rng(seed).standard_normal(n)
    return (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * noise).astype(np.float32)


# --- the published layout ------------------------------------------------------------------


def test_tiny_has_the_published_layout():
    folder = tiny_folder()
    index = json.loads((folder / INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "minicpmo" and config["architectures"] == ["MiniCPMO"]
    tok = tiny_loaded().tokenizer
    real = {"<image>": 151669, "</image>": 151670, "<slice>": 151679, "<unit>": 151683,
            "</unit>": 151684, "<|audio_start|>": 151697, "<|audio_end|>": 151699,
            "<|tts_bos|>": 151703, "<|listen|>": 151705, "<|speak|>": 151706,
            "<|turn_eos|>": 151717, "<|chunk_eos|>": 151718, "<|chunk_tts_eos|>": 151721,
            "<|tts_pad|>": 151722, "<|im_end|>": 151645}
    assert {t: tok.convert_tokens_to_ids(t) for t in real} == real
    assert tok.eos_token == "<|im_end|>"
    # A special token is one token, text around it is bytes.
    ids = tok.encode("a<unit>b", add_special_tokens=False)
    assert ids[1] == 151683 and len(ids) == 3
    assert tiny_loaded().model.llm.get_input_embeddings().weight.shape[0] == 151748


def test_same_seed_gives_byte_identical_shards(tmp_path):
    other = tiny.build_tiny(tmp_path / "again", seed=0)

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.glob("*.safetensors"))}

    assert digests(other) == digests(tiny_folder())


# --- frames and audio in -------------------------------------------------------------------


def test_a_448_frame_gives_64_embeddings():
    model = tiny_loaded().model
    out = model.embed_frame(_frame(448, 448))
    assert out.shape == (64, model.config.llm_hidden)
    assert torch.isfinite(out).all() and out.std() > 0
    # Other aspect ratios are resized to about 448² and still give 64.
    assert model.embed_frame(_frame(480, 640)).shape == (64, model.config.llm_hidden)
    # Different frames, different embeddings.
    assert not torch.allclose(out, model.embed_frame(_frame(448, 448, seed=5)))


def test_one_second_of_audio_gives_10_embeddings_and_the_cache_grows_by_50():
    model = tiny_loaded().model
    stream = model.new_audio_stream()
    audio = _speech(3.0)
    for unit in range(3):
        out = stream.feed(audio[unit * 16000:(unit + 1) * 16000])
        assert out.shape == (10, model.config.llm_hidden)
        assert torch.isfinite(out).all()
        assert len(stream.cache) == 50 * (unit + 1)


def test_reset_starts_a_new_conversation():
    model = tiny_loaded().model
    audio = _speech(2.0)
    stream = model.new_audio_stream()
    first = [stream.feed(audio[:16000]), stream.feed(audio[16000:])]
    stream.reset()
    assert len(stream.cache) == 0
    again = [stream.feed(audio[:16000]), stream.feed(audio[16000:])]
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_cache_carries_context_across_units():
    """The second unit's embeddings depend on the first unit's audio (through the KV
    cache and the mel context), not only on its own second."""
    model = tiny_loaded().model
    a, b = _speech(2.0, seed=1), _speech(2.0, seed=2)
    s1, s2 = model.new_audio_stream(), model.new_audio_stream()
    s1.feed(a[:16000])
    s2.feed(b[:16000])
    second_a, second_b = s1.feed(a[16000:]), s2.feed(a[16000:])
    assert not torch.allclose(second_a, second_b)


def test_the_encoder_cache_resets_before_it_overruns_the_positions():
    """1500 positions, 50 frames a unit: after 29 units the next one would not fit
    (the official check counts the unit's context frames too), so the cache restarts."""
    model = tiny_loaded().model
    stream = model.new_audio_stream()
    audio = _speech(31.0)
    lengths = []
    for unit in range(31):
        stream.feed(audio[unit * 16000:(unit + 1) * 16000])
        lengths.append(len(stream.cache))
    assert lengths[28] == 1450 and lengths[29] == 50 and lengths[30] == 100


def test_short_audio_waits_for_a_whole_unit():
    model = tiny_loaded().model
    stream = model.new_audio_stream()
    first = stream.feed(_speech(0.5))  # the first unit is padded in front: never waits
    assert first.shape[0] == 10
    assert stream.feed(_speech(0.5)).shape[0] == 0  # 0.5 s + 80 samples: not a unit yet
    assert stream.feed(_speech(0.5)).shape[0] == 10


# --- strict loading ------------------------------------------------------------------------


def _copy(tmp_path: Path) -> Path:
    """The tiny folder, its large shards linked rather than copied."""
    src, dst = tiny_folder(), tmp_path / "ckpt"
    dst.mkdir()
    for p in src.iterdir():
        if p.suffix == ".safetensors" or p.is_dir():  # shards and the speech assets: linked
            (dst / p.name).symlink_to(p)
        else:
            shutil.copy(p, dst / p.name)
    return dst


def _smallest_shard(folder: Path) -> Path:
    return min(folder.glob("*.safetensors"), key=lambda p: p.stat().st_size)


def _rewrite(folder: Path, shard: Path, change) -> None:
    """Rewrite one shard with `change(tensors)` applied, and the index to match."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(shard))
    change(tensors)
    shard.unlink()
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index = json.loads((folder / INDEX).read_text())
    weight_map = {k: v for k, v in index["weight_map"].items() if v != shard.name}
    weight_map.update(dict.fromkeys(tensors, shard.name))
    index["weight_map"] = weight_map
    (folder / INDEX).write_text(json.dumps(index))


def test_a_missing_tensor_is_an_error_naming_it(tmp_path):
    folder = _copy(tmp_path)
    shard = _smallest_shard(folder)
    gone = sorted(json.loads((folder / INDEX).read_text())["weight_map"])[-1]
    _rewrite(folder, shard, lambda t: t.pop(gone))
    with pytest.raises(BackendError, match=f"missing 1 tensor.*{gone}"):
        load_minicpmo(folder)


def test_an_unexpected_tensor_is_an_error_naming_it(tmp_path):
    folder = _copy(tmp_path)
    _rewrite(folder, _smallest_shard(folder),
             lambda t: t.update({"llm.model.extra_gate.weight": torch.zeros(2, 2)}))
    with pytest.raises(BackendError, match=r"unexpected 1 tensor.*llm\.model\.extra_gate"):
        load_minicpmo(folder)


def test_a_wrong_shape_is_an_error_naming_it(tmp_path):
    folder = _copy(tmp_path)
    shard = _smallest_shard(folder)

    def shrink(t):
        name = next(k for k, v in sorted(t.items()) if v.ndim == 2)
        t[name] = t[name][:, :1].contiguous()

    _rewrite(folder, shard, shrink)
    with pytest.raises(BackendError, match="wrong shape"):
        load_minicpmo(folder)


def test_an_index_naming_a_missing_shard_is_an_error(tmp_path):
    folder = _copy(tmp_path)
    index = json.loads((folder / INDEX).read_text())
    name = sorted(index["weight_map"])[0]
    index["weight_map"][name] = "model-00005-of-00004.safetensors"
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(BackendError, match=r"model-00005-of-00004\.safetensors"):
        load_minicpmo(folder)


def test_an_index_that_disagrees_with_the_shards_is_an_error(tmp_path):
    folder = _copy(tmp_path)
    index = json.loads((folder / INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = next(k for k, v in sorted(index["weight_map"].items()) if v == shards[0])
    index["weight_map"][name] = shards[1]
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(BackendError, match=name.replace(".", r"\.")):
        load_minicpmo(folder)


def test_a_missing_index_or_shard_is_an_error(tmp_path):
    folder = _copy(tmp_path)
    (folder / sorted(folder.glob("*.safetensors"))[2].name).unlink()
    with pytest.raises(BackendError, match="lacks 1 of the 4 weight shards"):
        load_minicpmo(folder)
    (folder / INDEX).unlink()
    with pytest.raises(BackendError, match=INDEX):
        load_minicpmo(folder)


def test_another_family_is_refused_by_name(tmp_path):
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="qwen3", architectures=["Qwen3ForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendError, match="minicpmo"):
        load_minicpmo(folder)


def test_reference_voice_gives_10_embeddings_a_second():
    model = tiny_loaded().model
    assert model.embed_reference_audio(_speech(1.6)).shape == (16, model.config.llm_hidden)
    assert model.embed_reference_audio(_speech(2.0)).shape == (20, model.config.llm_hidden)


def test_duetto_models_tiny_builds_minicpm_o():
    from app.model import families

    assert families.tiny_builder("minicpm-o") is tiny.build_tiny


def test_nf4_follows_the_placement_rule_and_still_sees_and_hears():
    """The LLM and the encoders' Linears in 4 bits; the resampler (nn.MultiheadAttention
    reads its weights directly) and the weight-normalised code head stay float."""
    from app.model.contract import Quant

    if not quant.quant_support(Quant.NF4, "cpu")[0]:
        pytest.skip("bitsandbytes has no 4-bit CPU kernel here")
    model = load_minicpmo(tiny_folder(), quant=Quant.NF4).model
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    for name in ("llm.model.layers.0.self_attn.q_proj", "llm.lm_head",
                 "vpm.encoder.layers.0.mlp.fc1", "apm.layers.0.fc1",
                 "audio_projection_layer.linear1"):
        assert kinds[name] == "Linear4bit", name
    assert kinds["resampler.attn.out_proj"] == "NonDynamicallyQuantizableLinear"
    assert kinds["tts.head_code.0"] == "ParametrizedLinear"
    frame = model.embed_frame(_frame(448, 448))
    stream = model.new_audio_stream()
    audio = stream.feed(_speech(1.0))
    assert frame.shape == (64, 128) and audio.shape == (10, 128)
    assert stream.feed(_speech(0.5)).shape == (0, 128)  # not a unit yet
    with torch.no_grad():
        logits = model.llm(inputs_embeds=torch.cat([frame, audio]).unsqueeze(0)).logits
    assert torch.isfinite(logits).all()


def test_the_vision_layer_the_official_tree_drops_is_passed_over(tmp_path):
    """A checkpoint may hold the last SigLIP layer the official model drops: those
    tensors (and only those) are recognised and not loaded."""
    folder = _copy(tmp_path)
    config = tiny_loaded().config
    dropped = config.vision.num_hidden_layers - 1
    width = config.vision.hidden_size
    extra = {f"vpm.encoder.layers.{dropped}.mlp.fc1.weight": torch.ones(7, width),
             f"vpm.encoder.layers.{dropped}.layer_norm1.bias": torch.ones(width)}
    _rewrite(folder, _smallest_shard(folder), lambda t: t.update(extra))
    loaded = load_minicpmo(folder)
    assert len(loaded.model.vpm.encoder.layers) == dropped
    assert not any(k.startswith(f"vpm.encoder.layers.{dropped}.")
                   for k in loaded.model.state_dict())
    # One layer further is not the dropped one: an error naming it.
    _rewrite(folder, _smallest_shard(folder), lambda t: t.update(
        {f"vpm.encoder.layers.{dropped + 1}.mlp.fc1.bias": torch.ones(width)}))
    with pytest.raises(BackendError, match=rf"vpm\.encoder\.layers\.{dropped + 1}\.mlp"):
        load_minicpmo(folder)


def test_a_missing_tokenizer_is_named_before_the_weights_are_read(tmp_path):
    folder = _copy(tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(BackendError, match=r"tokenizer\.json.*text tokenizer"):
        load_minicpmo(folder)


def test_a_float16_encoder_overflow_is_clamped_as_the_official_layer_does():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

    from app.model.minicpm_o.whisper_stream import WhisperCache, _layer_step

    layer = WhisperEncoderLayer(WhisperConfig(d_model=8, encoder_attention_heads=2,
                                              encoder_ffn_dim=32)).half()
    with torch.no_grad():
        layer.fc2.bias.fill_(60000.0)  # 30000 + 60000 overflows float16
        out = _layer_step(layer, torch.full((1, 3, 8), 30000.0, dtype=torch.float16),
                          WhisperCache(), 0, heads=2)
    assert torch.isfinite(out).all()
    assert float(out.max()) > 6e4  # clamped near the top of the range, not zeroed


def test_running_out_of_memory_while_placing_is_said_plainly(monkeypatch):
    from app.model.minicpm_o import loader

    def no_room(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loader, "place", no_room)
    with pytest.raises(BackendError, match="out of GPU memory while loading minicpm-o"):
        load_minicpmo(tiny_folder())


def test_the_memory_plan_is_checked_before_the_weights_are_read(monkeypatch):
    from app.model.minicpm_o import loader

    def never(*_args, **_kwargs):
        raise AssertionError("the weights were read although the plan does not fit")

    monkeypatch.setattr(loader, "read_shards", never)
    with pytest.raises(BackendError, match=r"needs .* MiB .* 1\.0 MiB free; nothing was loaded"):
        load_minicpmo(tiny_folder(), free=1024**2)


def test_the_plan_a_load_ran_under_is_kept():
    loaded = load_minicpmo(tiny_folder(), context=1200)
    assert loaded.plan is not None and loaded.plan.context == 1200
    assert loaded.plan.family == "minicpm-o" and "1200" in loaded.context_note


def test_random_weights_load_through_the_checkpoint_path():
    """`duetto bench gpu`'s MiniCPM-o rows: random weights go through the same plan, fit
    check and placement as a checkpoint (here the tiny architecture on the CPU)."""
    from app.model.contract import Quant
    from app.model.minicpm_o.config import MiniCPMOConfig
    from app.model.minicpm_o.loader import load_random

    config = MiniCPMOConfig.from_dict(tiny.tiny_config_dict(), where="tiny")
    first = load_random(Quant.BF16, device="cpu", config=config, seed=3)
    again = load_random(Quant.BF16, device="cpu", config=config, seed=3)
    other = load_random(Quant.BF16, device="cpu", config=config, seed=4)
    assert first.plan is not None and first.plan.context > 0
    name = "llm.model.layers.0.self_attn.q_proj.weight"
    a, b, c = (x.model.state_dict()[name] for x in (first, again, other))
    assert a.dtype == first.dtype and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.float().std()) > 0.0
    assert first.model.embed_frame(np.zeros((360, 640, 3), np.uint8)).shape[0] == 64
