"""MiniCPM-o speaks: the backend's units yield speech from the speech decoder and our
token2wav, on a live stream that keeps time with the units (live_voice.py), in the voice
of a recording (the persona's, else the checkpoint's demo voice).

The tiny checkpoint (tests/minicpmo_tiny.py) speaks on a schedule (schedule.py, the test
instrument); its speech is random-weight noise, so what is checked is where and how much
of it comes, never what it says.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from minicpmo_tiny import tiny_folder, tiny_loaded

from app.model.contract import BackendError, Control, Decision, Persona, Unit, Voice
from app.model.minicpm_o.backend import MiniCPMOBackend
from app.model.minicpm_o.duplex import Sampling
from app.model.minicpm_o.schedule import SpeakSchedule
from app.model.minicpm_o.tiny import speech_like

RATE = 24000
PERSONA = Persona("t", "Be brief.")


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny token2wav on one torch thread, as the benches run it (on a busy 2-core
    machine more threads make it many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _backend(runs, persona: Persona = PERSONA) -> MiniCPMOBackend:
    backend = MiniCPMOBackend(sampling=Sampling(force_listen_count=0))
    backend.attach(tiny_loaded(), SpeakSchedule(tuple(runs)))
    backend.start(persona)
    return backend


def _unit(k: int) -> Unit:
    audio = (0.01 * np.random.default_rng(k).standard_normal(16000)).astype(np.float32)
    return Unit(k, float(k), 1.0, 16000, audio)


def _run(backend, units, controls=None):
    """Each unit's outputs, and all the audio the stream got, in order."""
    per_unit = []
    for k in units:
        per_unit.append(list(backend.step(_unit(k), (controls or {}).get(k, Control()))))
    return per_unit


def _audio(outputs) -> np.ndarray:
    pieces = [o.speech.audio for o in outputs if o.speech is not None]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def test_a_turn_is_spoken_and_the_stream_keeps_time_with_the_units():
    backend = _backend([(1, 4)])
    per_unit = _run(backend, range(7))
    lengths = [_audio(u).size for u in per_unit]
    # Listening before the turn: one second of silence a unit.
    assert lengths[0] == RATE and not _audio(per_unit[0]).any()
    # The turn: speech in each of its units; the last one also flushes token2wav (the
    # last codes and the vocoder's held tail), so it yields more than a second...
    speech = [o.speech for u in per_unit[1:4] for o in u if o.speech is not None
              and o.speech.audio.any()]
    assert speech and all(c.response_id == 1 for c in speech)
    assert [c.seq for c in speech] == sorted(c.seq for c in speech)
    assert lengths[3] > RATE
    # ... and the unit after it gives the excess back from its silence.
    assert sum(lengths[:5]) == 5 * RATE
    assert lengths[5] == lengths[6] == RATE
    assert sum(lengths) == 7 * RATE
    # The words ride on the speech that voices them.
    spans = [c.text_span for c in speech if c.text_span]
    assert spans, "the unit's words go with its speech chunk"


def test_the_outputs_come_in_the_order_the_flow_reads_them():
    backend = _backend([(0, 2)])
    first, last = _run(backend, range(2))
    assert first[0].decision is Decision.SPEAK
    kinds = ["speech" if o.speech is not None else o.decision or "text" for o in last]
    # The turn's speech before its END_OF_TURN; silence making the unit up after it.
    end = kinds.index(Decision.END_OF_TURN)
    assert "speech" in kinds[:end]
    assert all(k == "speech" for k in kinds[end + 1:])


def test_each_turn_is_a_new_response_and_the_silence_after_keeps_its_id():
    backend = _backend([(0, 2), (3, 5)])
    per_unit = _run(backend, range(6))
    ids = [[o.speech.response_id for o in u if o.speech is not None] for u in per_unit]
    assert set(ids[0]) == {1} and set(ids[2]) == {1}  # the quiet unit after turn 1
    assert set(ids[3]) == {2} and set(ids[4]) == {2}


def test_a_barge_in_drops_the_answer_at_once():
    backend = _backend([(0, 10)])
    per_unit = _run(backend, range(4), {2: Control(barge_in=True), 3: Control(barge_in=True)})
    assert _audio(per_unit[1]).any()
    # The cut unit and the next are silence: nothing of the answer is voiced later.
    for outputs in per_unit[2:]:
        assert not _audio(outputs).any()
        assert _audio(outputs).size == RATE
    assert backend.results[2].closed_turn


def test_the_voice_is_the_persona_recording_and_its_prompt_is_kept_beside_it(tmp_path):
    import soundfile

    recording = tmp_path / "voice.wav"
    soundfile.write(str(recording), speech_like(16000, 6.0), 16000, subtype="PCM_16")
    persona = Persona("t", "Be brief.", voice=Voice(reference_audio=recording))
    backend = _backend([(0, 1)], persona)
    assert tiny_loaded().voices.last_source == "computed"
    first_voice_s = backend.timing.voice_s
    assert list(tmp_path.glob("*.minicpmo-voice.safetensors"))
    backend.start(persona)
    assert tiny_loaded().voices.last_source == "cache"
    assert backend.timing.voice_s < first_voice_s
    assert _audio(list(backend.step(_unit(0), Control()))).any()


def test_without_a_recording_the_checkpoint_demo_voice_speaks():
    backend = _backend([(0, 1)])
    assert backend.spec.voices == ("demo",)
    assert _audio(list(backend.step(_unit(0), Control()))).any()
    with pytest.raises(BackendError, match="no built-in voice 'Chelsie'"):
        backend.start(Persona("t", "", voice=Voice(builtin="Chelsie")))
    backend.start(Persona("t", "", voice=Voice(builtin="demo")))


def test_a_checkpoint_without_its_speech_vocoder_is_refused_with_what_to_do(tmp_path):
    import shutil

    from app.model.minicpm_o.loader import load_minicpmo

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_folder(), folder)
    shutil.rmtree(folder / "assets" / "token2wav")
    with pytest.raises(BackendError, match="speech vocoder is missing") as err:
        load_minicpmo(folder)
    assert "duetto models" in err.value.hint
