"""MiniCPM-o speaks: the backend's units yield speech from the speech decoder and our
token2wav, on a live stream that keeps time with the units (live_voice.py), in the voice
of a recording (the persona's, else the checkpoint's demo voice).

The tiny checkpoint (tests/minicpmo_tiny.py) speaks on a schedule (schedule.py, the test
instrument); its speech is random-weight noise, so what is checked is where and how much
of it comes, never what it says.
"""

from __future__ import annotations

import dataclasses

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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    speech = [o.speech for u in per_unit[1:5] for o in u if o.speech is not None
              and o.speech.audio.any()]
    assert speech and all(c.response_id == 1 for c in speech)
    assert [c.seq for c in speech] == sorted(c.seq for c in speech)
    # The turn's last unit filled its second; its end (the last codes and the vocoder's
    # held tail, a second flow pass) follows its speech, then the turn's END_OF_TURN:
    # the speech goes on without a gap. The next unit's silence gives the time back.
    last = per_unit[3]
    kinds = ["speech" if o.speech is not None else o.decision or "text" for o in last]
    assert kinds == [Decision.SPEAK, "text", "speech", "speech", Decision.END_OF_TURN]
    assert last[2].speech.audio.size == RATE
    assert last[3].speech.audio.any() and last[3].speech.response_id == 1
    assert lengths[4] == 2 * RATE - lengths[3] and not _audio(per_unit[4]).any()
    # The stream holds the units' length, the tail included.
    assert sum(lengths) == 7 * RATE
    # The words ride on the speech that voices them.
    spans = [c.text_span for c in speech if c.text_span]
    assert spans, "the unit's words go with its speech chunk"


def test_a_turn_that_ends_short_of_its_second_ends_in_that_unit():
    """When the last unit's codes fill no window, the flush is voiced at once (holding it
    over would put a gap of silence before the turn's last words)."""
    from app.model.minicpm_o.live_voice import LiveVoice

    backend = _backend([(1, 3)])
    voice: LiveVoice = backend._voice
    real_feed = voice.speech.feed

    def short_last(result):
        codes = real_feed(result)
        if codes.turn_ended and not codes.interrupted:
            return dataclasses.replace(codes, codes=codes.codes[:5])
        return codes

    voice.speech.feed = short_last
    per_unit = _run(backend, range(4))
    kinds = [o.decision for o in per_unit[2] if o.decision is not None]
    assert kinds == [Decision.SPEAK, Decision.END_OF_TURN]
    assert not any(o.decision is Decision.END_OF_TURN for o in per_unit[3])
    assert sum(_audio(u).size for u in per_unit) == 4 * RATE


def test_the_outputs_come_in_the_order_the_flow_reads_them():
    backend = _backend([(0, 2)])
    first, last, after = _run(backend, range(3))
    assert first[0].decision is Decision.SPEAK
    kinds = ["speech" if o.speech is not None else o.decision or "text" for o in last]
    # The unit's decision and words, its speech, then the turn's end (its last audio and
    # END_OF_TURN, which says the model listens); the next unit listens in silence.
    assert kinds == [Decision.SPEAK, "text", "speech", "speech", Decision.END_OF_TURN]
    kinds = ["speech" if o.speech is not None else o.decision or "text" for o in after]
    assert kinds == [Decision.LISTEN, "speech"]


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


def test_a_model_built_in_another_dtype_on_another_thread_does_not_reach_the_speech():
    """The window sizes memory plans in the background, building skeletons with torch's
    default dtype (one setting for the whole process) set to bfloat16. The speech path
    makes float tensors in the default dtype; it waits for such a build to end rather
    than run in its dtype (the self-check's start failed so)."""
    import threading

    from app.model.building import building
    from app.model.contract import ModelSource, Quant

    backend = MiniCPMOBackend(sampling=Sampling(force_listen_count=0))
    backend.load(ModelSource(local_dir=tiny_folder()), Quant.BF16, lambda *_: None)  # as the app
    backend.attach(backend.loaded, SpeakSchedule(((0, 2),)))
    inside, release = threading.Event(), threading.Event()

    def plan() -> None:
        with building(torch.bfloat16):
            inside.set()
            release.wait(10)

    planner = threading.Thread(target=plan)
    planner.start()
    assert inside.wait(10)
    # Held for a few seconds: longer than the start takes to reach the voice.
    threading.Timer(4.0, release.set).start()
    try:  # the conversation starts (the voice's turn-start state) and speaks meanwhile
        backend.start(PERSONA)
        outputs = _run(backend, [0])[0]
    finally:
        release.set()
        planner.join()
    speech = _audio(outputs)
    assert speech.dtype == np.float32 and np.abs(speech).max() > 0.01
    assert torch.get_default_dtype() == torch.float32
