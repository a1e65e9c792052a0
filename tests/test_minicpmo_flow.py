"""MiniCPM-o token2wav's flow (our port): flow.yaml reading, the tiny flow's stream.

Parity with the reference (minicpmo-utils 1.0.6) on the tiny weights is checked against
tests/data/minicpmo_goldens/flow.*; the full-size tree against the published key list.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch

from app.model.minicpm_o.token2wav.flow import (
    CACHE_TAIL_FRAMES,
    FlowLoadError,
    FlowModel,
    cache_bytes,
    flow_noise,
)
from app.model.minicpm_o.token2wav.flow_yaml import (
    FlowYamlError,
    flow_yaml_text,
    parse_flow_yaml,
    published_flow_config,
)
from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.tiny_flow import tiny_flow_config, write_tiny_flow

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_flow(tmp_path_factory.mktemp("tiny_flow"), seed=0)


@pytest.fixture(scope="module")
def tiny_flow(tiny_folder) -> FlowModel:
    return FlowModel.load(tiny_folder)


def _prompt(n_codes: int, seed: int = 1) -> VoicePrompt:
    g = torch.Generator().manual_seed(seed)
    return VoicePrompt(tokens=torch.randint(0, 6561, (1, n_codes), generator=g, dtype=torch.int32),
                       speaker=torch.randn(1, 192, generator=g),
                       mel=torch.randn(1, 2 * n_codes, 80, generator=g))


def test_flow_yaml_round_trip_keeps_every_setting():
    config = tiny_flow_config()
    assert parse_flow_yaml(flow_yaml_text(config)) == config


@pytest.mark.parametrize("bad, named", [
    ("!name:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec", "!name:"),
    ("!!python/object/apply:os.system ['true']", "python/object"),
    ("!new:os.system", "!new:os.system"),
])
def test_flow_yaml_refuses_any_other_tag_by_name(bad, named):
    text = flow_yaml_text(tiny_flow_config()) + f"extra: {bad}\n"
    with pytest.raises(FlowYamlError, match=named.replace("!", ".")):
        parse_flow_yaml(text)


def test_flow_yaml_refuses_settings_the_port_does_not_implement():
    text = flow_yaml_text(tiny_flow_config())
    with pytest.raises(FlowYamlError, match="pos_enc_layer_type"):
        parse_flow_yaml(text.replace("'rel_pos_espnet'", "'abs_pos'"))
    with pytest.raises(FlowYamlError, match="causal_conv_kernel"):
        parse_flow_yaml(text.replace("    depth: 2\n",
                                     "    depth: 2\n            causal_conv_kernel: 5\n"))


def test_a_flow_pt_of_another_tree_is_refused_with_the_differences(tmp_path, tiny_folder):
    (tmp_path / "flow.yaml").write_text((tiny_folder / "flow.yaml").read_text())
    state = torch.load(tiny_folder / "flow.pt", weights_only=True)
    state.pop("encoder_proj.bias")
    state["encoder.after_norm.weight"] = torch.ones(7)
    torch.save(state, tmp_path / "flow.pt")
    with pytest.raises(FlowLoadError, match=r"1 missing \(e.g. encoder_proj.bias\).*"
                                            r"encoder.after_norm.weight: file \(7,\)"):
        FlowModel.load(tmp_path)


class _Payload:
    """A pickled object: what weights_only loading must refuse to build."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_flow_pt_that_would_run_code_is_refused(tmp_path, tiny_folder, capsys):
    (tmp_path / "flow.yaml").write_text((tiny_folder / "flow.yaml").read_text())
    torch.save({"x": _Payload()}, tmp_path / "flow.pt")
    with pytest.raises(FlowLoadError, match="not a plain tensor file"):
        FlowModel.load(tmp_path)
    assert "this must never run" not in capsys.readouterr().out


def test_chunks_give_two_frames_per_code_and_the_caches_stay_bounded(tiny_flow):
    prompt = _prompt(20)
    cache = tiny_flow.setup_cache(prompt, n_timesteps=4)
    assert cache.frames == 40  # the prompt's frames; its 3 look-ahead silences give none
    codes = torch.randint(0, 6561, (1, 150), generator=torch.Generator().manual_seed(2),
                          dtype=torch.int32)
    frames_seen = []
    for i in range(5):
        mel, cache = tiny_flow.inference_chunk(codes[:, 25 * i:25 * i + 28], prompt, cache,
                                               last=False, n_timesteps=4)
        assert mel.shape == (1, 80, 50)  # 28 codes, 3 of them only looked ahead
        assert torch.isfinite(mel).all()
        frames_seen.append(cache.frames)
    assert frames_seen == [90, 140, 140, 140, 140]  # cut to prompt + 100 from the third
    assert cache.conformer.att.shape[3] == 40 + CACHE_TAIL_FRAMES
    held = sum(t.numel() * t.element_size() for t in (
        cache.estimator_att, cache.estimator_cnn, cache.conformer.att, cache.conformer.cnn))
    assert cache_bytes(tiny_flow.config, 40, 4) == held
    mel, cache = tiny_flow.inference_chunk(codes[:, 125:135], prompt, cache, last=True,
                                           n_timesteps=4)
    assert mel.shape == (1, 80, 20)  # the last chunk: every code gives its frames


def test_the_turn_start_cache_is_not_changed_by_the_chunks_after_it(tiny_flow):
    prompt = _prompt(12)
    start = tiny_flow.setup_cache(prompt, n_timesteps=3)
    codes = torch.randint(0, 6561, (1, 28), generator=torch.Generator().manual_seed(3),
                          dtype=torch.int32)
    first, _ = tiny_flow.inference_chunk(codes, prompt, start, last=False, n_timesteps=3)
    again, _ = tiny_flow.inference_chunk(codes, prompt, start, last=False, n_timesteps=3)
    assert torch.equal(first, again)


def test_fewer_steps_need_their_own_cache(tiny_flow):
    prompt = _prompt(8)
    cache = tiny_flow.setup_cache(prompt, n_timesteps=5)
    codes = torch.full((1, 28), 4218, dtype=torch.int32)
    with pytest.raises(ValueError, match="made with 5 solver steps"):
        tiny_flow.inference_chunk(codes, prompt, cache, last=False, n_timesteps=10)
    with pytest.raises(ValueError, match=r"speech codes must be in \[0, 6561\)"):
        tiny_flow.inference_chunk(codes + 3000, prompt, cache, last=False, n_timesteps=5)


# --- parity with the reference (minicpmo-utils 1.0.6) on the tiny weights -------------

GOLDENS = Path(__file__).parent / "data" / "minicpmo_goldens"
KEYLISTS = Path(__file__).parent / "data" / "keylists"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def golden() -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    record = json.loads((GOLDENS / "flow.json").read_text())
    return record, load_file(GOLDENS / record["tensors_file"])


def test_the_goldens_were_made_on_these_tiny_weights_and_this_noise(tiny_folder, golden):
    record, _ = golden
    state = torch.load(tiny_folder / "flow.pt", weights_only=True)
    assert set(state) == set(record["weights"])
    changed = [k for k, v in state.items()
               if float(v.double().sum()) != pytest.approx(record["weights"][k], abs=1e-6)]
    assert not changed, f"the tiny builder changed since the goldens were made: {changed[:5]}"
    noise = flow_noise(80)
    assert noise.shape[2] == record["noise"]["frames"]
    assert float(noise[:, :, :1000].double().sum()) == pytest.approx(
        record["noise"]["sum_first_1000_frames"], abs=1e-9)


def _stream_like_the_reference(flow: FlowModel, record: dict, tensors: dict, name: str,
                               steps: int):
    prompt = VoicePrompt(tokens=tensors[f"{name}.prompt_tokens"],
                         speaker=tensors[f"{name}.prompt_speaker"],
                         mel=tensors[f"{name}.prompt_mel"])
    cache = flow.setup_cache(prompt, n_timesteps=steps)
    setup = cache
    window = record["window"]
    buffer, outputs = list(window["silence_prefix"]), []
    chunks: list[tuple[list[int], bool]] = []
    for code in tensors["turn_codes"][0].tolist():
        buffer.append(code)
        if len(buffer) >= window["size"]:
            chunks.append((buffer[:window["size"]], False))
            buffer = buffer[window["stride"]:]
    chunks.append((buffer, True))
    for codes, last in chunks:
        mel, cache = flow.inference_chunk(torch.tensor([codes], dtype=torch.int32), prompt,
                                          cache, last=last, n_timesteps=steps)
        outputs.append((len(codes), last, mel, cache))
    return setup, outputs


@pytest.mark.parametrize("run_name", ["short/10", "short/5", "long/10"])
def test_streamed_mel_equals_the_reference_chunk_by_chunk(tiny_flow, golden, run_name):
    """A 20-code and a 100-code voice prompt (the caches' cut keeps other frames when the
    prompt outgrows the conformer's code-rate cache), 10 solver steps and 5."""
    record, tensors = golden
    run = record["runs"][run_name]
    name, steps = run["prompt"], run["steps"]
    setup, outputs = _stream_like_the_reference(tiny_flow, record, tensors, name, steps)

    ours = {"conformer_cnn_cache": setup.conformer.cnn, "conformer_att_cache": setup.conformer.att,
            "estimator_cnn_cache": setup.estimator_cnn, "estimator_att_cache": setup.estimator_att}
    for cache_name, tensor in ours.items():
        assert list(tensor.shape) == run["setup_cache_shapes"][cache_name], cache_name
        assert float(tensor.double().sum()) == pytest.approx(
            run["setup_cache_sums"][cache_name], rel=1e-4, abs=1e-2), cache_name

    assert len(outputs) == len(run["chunks"])
    for i, ((n_codes, last, mel, cache), want) in enumerate(zip(outputs, run["chunks"],
                                                                strict=True)):
        assert (n_codes, last, mel.shape[2]) == (want["codes"], want["last"], want["frames"])
        assert cache.estimator_att.shape[4] == want["estimator_att_frames"]
        assert cache.conformer.att.shape[3] == want["conformer_att_frames"]
        expected = tensors[f"{name}.steps{steps}.mel{i}"]
        diff = float((mel[0] - expected).abs().max())
        assert diff <= TOLERANCE, f"chunk {i} ({n_codes} codes, last={last}): max |diff| {diff}"


def test_full_size_tree_matches_the_published_flow_key_list():
    record = json.loads(gzip.decompress((KEYLISTS / "minicpm-o-4.5-flow.json.gz").read_bytes()))
    want = {k: tuple(v) for k, v in record["files"]["flow.pt"]["tensors"].items()}
    published = parse_flow_yaml(record["flow_yaml"])  # by our own safe reader
    assert published == published_flow_config()
    with torch.device("meta"):
        model = FlowModel(published)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}
    assert sum(math.prod(s) for s in got.values()) == 155_802_352  # 594 MiB of float32
    # A 10 s voice prompt (500 frames), 10 steps, float32: what the stream keeps per voice.
    assert cache_bytes(published, 500, 10) / 2**30 == pytest.approx(0.76, abs=0.01)
