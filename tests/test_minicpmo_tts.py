"""The speech decoder (app/model/minicpm_o/tts.py) against OpenBMB's own, and its turn rules.

scripts/minicpmo_tts_reference.py ran the official MiniCPMODuplex with speech on over
the scripted session of tests/minicpmo_tts_inputs.py, on the tiny checkpoint, and
recorded per unit the condition it gave MiniCPMTTS.generate_chunk and the codes it got
(tests/data/minicpmo_goldens/tts.json): once greedy with the end code raised at a few
steps, once sampled as published from a seeded generator. Here Duetto's backend runs the
same session and its SpeechStream must give the same codes, unit by unit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.model.minicpm_o.duplex import UnitResult
from app.model.minicpm_o.tts import SpeechCodes, SpeechSampling, SpeechStream
from tests import minicpmo_tts_inputs as ti
from tests.minicpmo_tiny import built_as, tiny_loaded

GOLDENS = Path(__file__).parent / "data" / "minicpmo_goldens"
TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDENS / "tts.json").read_text())


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "tts.safetensors"))


@pytest.fixture(scope="module")
def loaded(golden):
    """The tiny checkpoint the goldens were recorded on; refused if it is not the same."""
    meta = golden["checkpoint"]["builder_meta"]
    assert built_as(meta), f"the shared tiny checkpoint is not built as the goldens' ({meta})"
    loaded = tiny_loaded()
    state = loaded.model.state_dict()
    for name, (s, s2) in golden["weights"].items():
        t = state[name].double()
        assert [float(t.sum()), float(t.pow(2).sum())] == pytest.approx([s, s2], rel=1e-6,
                                                                          abs=1e-9), (
            f"the tiny {name} differs from the goldens': rerun "
            "scripts/minicpmo_tts_reference.py tts")
    return loaded


class _Steer:
    """minicpmo_tts_inputs.steer as the backend's steer (the same biases on the raw
    logits as the reference run's)."""

    def steer(self, ids, tokenizer):
        def bias(unit: int, j: int, turn_open: bool) -> dict[int, float]:
            return {tokenizer.convert_tokens_to_ids(name): value
                    for name, value in ti.steer(unit, j).items()}

        return bias


def _session(loaded, tmp_path, sampling: SpeechSampling, *, end_steer: bool):
    """Duetto's backend, greedy LLM, over the scripted session: per unit the UnitResult
    (with its hidden states), the TTS condition and the SpeechCodes."""
    import soundfile

    from app.model.contract import Control, Persona, Unit, Voice
    from app.model.minicpm_o.backend import MiniCPMOBackend
    from app.model.minicpm_o.duplex import Sampling

    voice = tmp_path / "voice.wav"
    soundfile.write(voice, ti.ref_audio(), ti.SAMPLE_RATE, subtype="FLOAT")
    backend = MiniCPMOBackend(sampling=Sampling(
        greedy=True, force_listen_count=ti.FORCE_LISTEN_COUNT,
        max_unit_tokens=ti.MAX_NEW_SPEAK_TOKENS_PER_CHUNK))
    backend.attach(loaded, _Steer())
    backend.start(Persona("golden", "", voice=Voice(reference_audio=voice)))
    results: list[UnitResult] = []
    step = backend.decoder.step

    def keep(*args, **kwargs):  # the backend keeps its history without the hidden states
        results.append(step(*args, **kwargs))
        return results[-1]

    backend.decoder.step = keep
    tts = loaded.model.tts
    stream = SpeechStream(tts, sampling=sampling)
    conditions: list[torch.Tensor] = []
    condition = tts.condition

    def seen(*args, **kwargs):
        conditions.append(condition(*args, **kwargs))
        return conditions[-1]

    tts.condition = seen
    hook = ti.EndCodeSteer(tts.head_code[0], tts.eos_code) if end_steer else None
    out = []
    try:
        for k in range(ti.UNITS):
            list(backend.step(Unit(k, float(k), 1.0, ti.SAMPLE_RATE, ti.unit_audio(k), ()),
                              Control()))
            if hook is not None:
                hook.begin(k)
            before = len(conditions)
            speech = stream.feed(results[-1])
            out.append((results[-1], conditions[before] if len(conditions) > before else None,
                        speech))
    finally:
        del tts.condition
        if hook is not None:
            hook.handle.remove()
    return out


@pytest.fixture(scope="module")
def sessions(golden, loaded, tmp_path_factory) -> dict:
    """Our runs of the golden session: greedy with the end-code steer, and sampled."""
    return {
        "greedy": _session(loaded, tmp_path_factory.mktemp("greedy"),
                           SpeechSampling(greedy=True), end_steer=True),
        "sampled": _session(loaded, tmp_path_factory.mktemp("sampled"),
                            SpeechSampling(seed=golden["sampled"]["seed"]), end_steer=False),
    }


@pytest.mark.parametrize("run", ["greedy", "sampled"])
def test_a_scripted_session_gives_the_official_speech_codes(golden, tensors, sessions, run):
    """Every unit: the LLM's tokens, the TTS condition within 1e-4, and the codes equal
    the official loop's; no speech where it made none; the turn ends where it did."""
    record = golden[run]
    got = sessions[run]
    assert len(got) == len(record["units"])
    for (result, condition, speech), want in zip(got, record["units"], strict=True):
        k = want["unit"]
        assert list(result.tokens) == want["generated_ids"], f"unit {k}: LLM tokens"
        if want["tts"] is None:
            assert speech == SpeechCodes(), f"unit {k}: the official loop made no speech"
            continue
        ref = tensors[want["tts"]["condition"]]
        assert condition is not None and tuple(condition[0].shape) == tuple(ref.shape), (
            f"unit {k}: condition shape")
        diff = float((condition[0].float() - ref).abs().max())
        assert diff < TOLERANCE, f"unit {k}: condition max difference {diff:.2e}"
        assert list(speech.codes) == want["tts"]["codes"], f"unit {k}: codes"
        assert speech.turn_ended == want["end_of_turn"], f"unit {k}: turn end"
        assert speech.turn_started == (want["tts"]["text_start_pos"] == 0), f"unit {k}"
        assert not speech.interrupted


def test_the_end_code_rules_were_walked(golden):
    """The greedy golden covers what the rules decide: early stops where allowed, none
    mid-turn though the end code was raised there, and a unit with no codes."""
    units = {u["unit"]: u["tts"] for u in golden["greedy"]["units"] if u["tts"]}
    assert len(units[1]["codes"]) == 10 and units[1]["min_new_tokens"] == 0
    assert len(units[2]["codes"]) == 25 and units[2]["min_new_tokens"] == 26
    assert len(units[3]["codes"]) == 12
    assert units[5]["codes"] == [] and not units[5]["had_cache"]
    assert units[6]["had_cache"] and units[6]["text_start_pos"] > 0


# --- the turn rules on Duetto's own records ------------------------------------------------


def _unit(loaded, *, words: int, speaking: bool = True, turn_open: bool = True,
          turn_ended: bool = False, closed_turn: bool = False, stopped: bool = False,
          forced: bool = False) -> UnitResult:
    width = loaded.model.config.llm_hidden
    gen = torch.Generator().manual_seed(words)
    return UnitResult(index=0, tokens=(), text_ids=tuple(range(1000, 1000 + words)),
                      speaking=speaking, turn_ended=turn_ended, forced=forced,
                      closed_turn=closed_turn, stopped=stopped, turn_open=turn_open,
                      text_hidden=torch.randn(words, width, generator=gen) if words else None)


def test_the_cache_carries_across_a_turn_and_is_dropped_at_its_end(loaded):
    stream = SpeechStream(loaded.model.tts, sampling=SpeechSampling(greedy=True))
    first = stream.feed(_unit(loaded, words=4))
    assert stream.in_turn and stream.cache_length == 5 + len(first.codes)
    assert first.turn_started and not first.turn_ended
    mid = stream.feed(_unit(loaded, words=3))
    assert len(mid.codes) == 25 and stream.cache_length == 5 + len(first.codes) + 4 + 25
    assert not mid.turn_started
    last = stream.feed(_unit(loaded, words=2, turn_open=False, turn_ended=True))
    assert last.turn_ended and not last.interrupted and not stream.in_turn
    # A new turn starts from nothing: the same words give the first unit's codes again.
    assert stream.feed(_unit(loaded, words=4)) == first


def test_a_turn_that_ends_with_listen_is_still_spoken_and_ended(loaded):
    """<|turn_eos|> then <|listen|> in one unit: the official loop skips the unit's
    speech and keeps the cache (its words are lost); here they are spoken, the turn ends."""
    stream = SpeechStream(loaded.model.tts, sampling=SpeechSampling(greedy=True))
    stream.feed(_unit(loaded, words=4))
    speech = stream.feed(_unit(loaded, words=3, turn_open=False, turn_ended=True))
    assert len(speech.codes) > 0 and speech.turn_ended and not stream.in_turn


def test_a_barge_in_drops_the_turn_without_speech(loaded):
    stream = SpeechStream(loaded.model.tts, sampling=SpeechSampling(greedy=True))
    stream.feed(_unit(loaded, words=4))
    cut = stream.feed(_unit(loaded, words=0, speaking=False, turn_open=False, forced=True,
                            closed_turn=True))
    assert cut == SpeechCodes(turn_ended=True, interrupted=True) and not stream.in_turn
    stopped = stream.feed(_unit(loaded, words=2, turn_open=False, stopped=True))
    assert stopped.interrupted and stopped.codes == ()


def test_listening_units_make_no_speech_and_carry_no_hidden_states(loaded, sessions):
    for result, _, speech in sessions["greedy"]:
        if result.speaking:
            assert result.text_hidden is not None or not result.text_ids
            if result.text_hidden is not None:
                assert tuple(result.text_hidden.shape) == (
                    len(result.text_ids), loaded.model.config.llm_hidden)
        else:
            assert result.text_hidden is None and speech == SpeechCodes()


def test_a_word_count_that_does_not_match_the_hidden_states_is_refused(loaded):
    tts = loaded.model.tts
    with pytest.raises(ValueError, match="one LLM hidden state per word"):
        tts.condition([5, 6], torch.zeros(1, loaded.model.config.llm_hidden))
