"""Loading the tiny Qwen2.5-Omni: spec, speakers, bad folders, 8-bit and 4-bit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tiny_models
from tiny_models import loaded_backend, make_unit, started_backend

from app.model import quant
from app.model.contract import (
    Backend,
    BackendError,
    Control,
    Decision,
    ModelSource,
    Persona,
    Quant,
    Unit,
    Voice,
)
from app.model.qwen_omni.backend import QwenOmniBackend

qwen_tiny = tiny_models.qwen_tiny
qwen_tiny_factory = tiny_models.qwen_tiny_factory


def test_spec_before_and_after_load(qwen_tiny):
    b = QwenOmniBackend(unit_ms=500, device=tiny_models.TEST_DEVICE)
    assert isinstance(b, Backend)
    s = b.spec
    assert (s.unit_ms, s.audio_in_rate, s.audio_out_rate) == (500, 16000, 24000)
    assert s.frames_per_unit == 1 and not s.native_duplex
    assert set(s.vram_gib) == set(Quant)
    b.load(ModelSource(local_dir=qwen_tiny), Quant.BF16, lambda what, frac: None)
    assert b.spec.voices == ("Chelsie", "Ethan")
    # After load the VRAM needs come from this checkpoint's memory plan (a tiny model's
    # figures are mostly working memory, so the quantizations hardly differ).
    need = b.spec.vram_gib
    assert all(0 < need[q] < 1 for q in Quant)
    assert need[Quant.BF16] == pytest.approx(b._loaded.plan.total_gib)
    b.close()
    with pytest.raises(BackendError, match="not loaded"):
        b.start(Persona("p", "hi"))


def test_a_tiny_folder_sets_its_flow_steps_and_an_explicit_choice_wins(qwen_tiny):
    """The tiny token2wav takes 2 flow steps (tiny.py): its speech must come well faster
    than real time on a slow CPU. A real checkpoint has no duetto.json: 10 steps."""
    from app.model.qwen_omni.speech import AnswerConfig
    from app.model.qwen_omni.tiny import TINY_FLOW_STEPS
    from app.model.qwen_omni.voice import VoiceStream

    assert loaded_backend(qwen_tiny).answer_config.voice["num_steps"] == TINY_FLOW_STEPS
    chosen = AnswerConfig(voice={"num_steps": 7})
    assert loaded_backend(qwen_tiny, answer=chosen).answer_config.voice["num_steps"] == 7
    bare = qwen_tiny.parent / "no-meta"
    if not bare.exists():
        shutil.copytree(qwen_tiny, bare)
        (bare / "duetto.json").unlink()
    backend = loaded_backend(bare)
    assert "num_steps" not in backend.answer_config.voice
    assert VoiceStream.__init__.__kwdefaults__["num_steps"] == 10


def test_a_tiny_folder_with_answer_codes_speaks_that_long_on_its_short_text(qwen_tiny):
    """A real answer speaks about 15 codes per text token; a tiny folder that says how
    many codes its answers speak gets text of its `min_answer_tokens` and speech of its
    `answer_codes` (tiny.py), and one that does not keeps a code per token."""
    import json

    talky = qwen_tiny.parent / "answer-codes"
    if not talky.exists():
        shutil.copytree(qwen_tiny, talky)
        meta = json.loads((talky / "duetto.json").read_text())
        (talky / "duetto.json").write_text(json.dumps({**meta, "answer_codes": 150}))
    config = loaded_backend(talky).answer_config
    tokens = json.loads((talky / "duetto.json").read_text())["min_answer_tokens"]
    assert config.min_codes == 150
    assert config.min_answer_tokens == config.max_answer_tokens == tokens
    plain = loaded_backend(qwen_tiny).answer_config
    assert plain.min_codes == tokens + 1 and plain.max_answer_tokens == 512


def test_unknown_speaker_lists_the_available_ones(qwen_tiny):
    b = loaded_backend(qwen_tiny)
    with pytest.raises(BackendError) as err:
        b.start(Persona("p", "hi", voice=Voice(builtin="Nobody")))
    assert "Nobody" in str(err.value) and "Chelsie" in str(err.value) and "Ethan" in str(err.value)
    b.start(Persona("p", "hi", voice=Voice(builtin="Ethan")))  # a known one is fine


def test_missing_speaker_dict_is_a_backend_error(qwen_tiny, tmp_path):
    folder = tmp_path / "no_spk"
    shutil.copytree(qwen_tiny, folder)
    (folder / "spk_dict.pt").unlink()
    with pytest.raises(BackendError, match="spk_dict"):
        loaded_backend(folder)


def test_missing_folder_is_a_backend_error(tmp_path):
    with pytest.raises(BackendError):
        loaded_backend(tmp_path / "nothing here")


def test_bad_units_get_clear_errors(qwen_tiny):
    b = started_backend(qwen_tiny)
    good = make_unit(0)
    wrong_rate = Unit(0, 0.0, 1.0, 48000, np.zeros(48000, np.float32))
    with pytest.raises(BackendError, match="16000 Hz"):
        b.step(wrong_rate, Control())
    bad_frame = Unit(0, 0.0, 1.0, 16000, good.audio, (good.frames[0].__class__(
        pixels=np.zeros((4, 4), np.uint8), t=0.0, seq=0),))
    with pytest.raises(BackendError, match="RGB"):
        b.step(bad_frame, Control())
    # The conversation is still usable after bad input.
    assert [o.decision for o in b.step(good, Control())] == [Decision.LISTEN]


@pytest.mark.parametrize("q", [Quant.INT8, Quant.NF4])
def test_quantized_loading(qwen_tiny, q):
    ok, why = quant.quant_support(q, "cpu")
    if not ok:
        pytest.skip(f"{q.value} not supported on this CPU: {why}")
    b = started_backend(qwen_tiny, quant=q, max_answer_tokens=4)
    import bitsandbytes as bnb

    model = b._loaded.model
    quantized = [n for n, m in model.named_modules()
                 if isinstance(m, bnb.nn.Linear8bitLt | bnb.nn.Linear4bit)]
    assert quantized, "nothing was quantized"
    # The placement rule: thinker, encoders and talker quantized; the talker's code head
    # and projection and the whole vocoder kept in floating point.
    assert any(n.startswith("talker.model.") for n in quantized)
    assert not any(n.startswith(("token2wav", "talker.codec_head",
                                 "talker.thinker_to_talker_proj")) for n in quantized)
    outs = list(b.step(make_unit(0), Control(turn_ended=True)))
    assert outs[-1].decision is Decision.END_OF_TURN
    assert any(o.speech is not None for o in outs)
    b.close()
