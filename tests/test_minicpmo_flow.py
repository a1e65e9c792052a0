"""MiniCPM-o token2wav's flow (our port): flow.yaml reading, the tiny flow's stream.

Parity with the reference (minicpmo-utils 1.0.6) on the tiny weights is checked against
tests/data/minicpmo_goldens/flow.*; the full-size tree against the published key list.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.model.minicpm_o.token2wav.flow import (
    CACHE_TAIL_FRAMES,
    FlowLoadError,
    FlowModel,
)
from app.model.minicpm_o.token2wav.flow_yaml import FlowYamlError, flow_yaml_text, parse_flow_yaml
from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.tiny_flow import tiny_flow_config, write_tiny_flow


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
