"""The upstream audio format per model: what the server's session states, sent as such.

vLLM-Omni's deployments differ (its client presets: PersonaPlex takes 24 kHz float32,
MiniCPM-o 16 kHz PCM16) and refuse anything else. `duetto serve --input-format` states
one format the same way and refuses other appends, so a client that did not read the
statement fails here. The served model is the tiny Moshi, recording what reached it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import vllm_omni_bare
from duplex_server import ServerThread

from app.model.contract import Control, ModelSource, Persona, Quant, Unit
from app.model.moshi.backend import MoshiBackend
from app.model.remote import wire
from app.model.remote.backend import RemoteBackend
from app.serve.cli import input_format

moshi_tiny_factory = tiny_models.moshi_tiny_factory

PERSONA = Persona("test", "You are a helpful assistant.")


class HearingMoshi(MoshiBackend):
    """The tiny Moshi, keeping the audio of every unit it was given."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.heard: list[np.ndarray] = []

    def step(self, unit: Unit, control: Control):
        self.heard.append(unit.audio.copy())
        return super().step(unit, control)


@pytest.fixture(scope="module")
def moshi(moshi_tiny_factory) -> HearingMoshi:
    backend = HearingMoshi(device="cpu")
    backend.load(ModelSource(local_dir=moshi_tiny_factory()), Quant.BF16, lambda *_: None)
    yield backend
    backend.close()


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("stated", ["pcm16@16000", "pcm_f32le@24000"])
def test_the_remote_backend_sends_what_the_session_states(moshi, stated):
    fmt = input_format(stated)
    moshi.heard.clear()
    with ServerThread(moshi, input_format=fmt) as server:
        remote = RemoteBackend(address=server.address, model="tiny")  # no preset: 16k PCM16
        remote.load(ModelSource(), Quant.BF16, lambda *_: None)
        assert remote.input_format == fmt
        assert remote.spec.audio_in_rate == fmt.rate  # the session resamples to it
        assert fmt.describe() in remote.describe()
        remote.start(PERSONA)
        unit_samples = round(remote.spec.unit_ms * fmt.rate / 1000)
        tone = _tone(fmt.rate, 40 * unit_samples / fmt.rate)
        for i in range(40):
            audio = tone[i * unit_samples:(i + 1) * unit_samples]
            unit = Unit(i, i * remote.spec.unit_ms / 1000, len(audio) / fmt.rate, fmt.rate,
                        audio, ())
            list(remote.step(unit, Control()))  # raises if the server refused an append
        remote.close()
    heard = np.concatenate(moshi.heard)  # at the model's 24 kHz
    assert len(heard) >= 0.9 * 40 * unit_samples * 24000 / fmt.rate
    if fmt.encoding == wire.F32 and fmt.rate == 24000:
        # Float32 at the model's own rate: nothing to round or resample, bit for bit.
        np.testing.assert_array_equal(heard, tone[:len(heard)])
    else:
        # PCM16 at 16 kHz, resampled to 24 kHz on the server: the same tone.
        steady = heard[2400:]
        spectrum = np.abs(np.fft.rfft(steady))
        peak_hz = np.argmax(spectrum) * 24000 / len(steady)
        assert abs(peak_hz - 440) < 5, peak_hz
        assert abs(np.sqrt(np.mean(steady ** 2)) - 0.3 / np.sqrt(2)) < 0.01


def test_the_server_refuses_another_format_and_says_which_it_takes(moshi):
    """What a client that ignored the statement gets (and the check above relies on)."""
    fmt = input_format("pcm_f32le@24000")
    with ServerThread(moshi, input_format=fmt) as server:
        remote = RemoteBackend(address=server.address, model="tiny")
        remote.load(ModelSource(), Quant.BF16, lambda *_: None)
        remote.start(PERSONA)
        remote.input_format = wire.AudioFormat()  # as if it had not read the session
        unit = Unit(0, 0.0, 0.08, 16000, np.zeros(1280, np.float32), ())
        with pytest.raises(Exception, match="24 kHz pcm_f32le"):
            for _ in range(3):
                list(remote.step(unit, Control()))
        remote.close()


def test_presets_and_statements_in_vllm_omnis_own_shapes():
    """Our presets are vLLM-Omni's client presets, and we read a session stated the way
    its server states one (input_audio_format, audio.input.format {type, rate})."""
    vllm_omni_bare.packages()
    from vllm_omni.clients import minicpmo_4_5, nemotron_voicechat, personaplex
    from vllm_omni.protocol.realtime.formats import realtime_audio_format_object
    from vllm_omni.protocol.realtime.session import RealtimeInputDefaults

    for model, preset in [("nvidia/personaplex-7b-v1", personaplex),
                          ("openbmb/MiniCPM-o-4_5", minicpmo_4_5),
                          ("nvidia/nemotron-voicechat", nemotron_voicechat)]:
        payload = preset.create_duplex_session_config().to_session_payload(model=model)
        server = RealtimeInputDefaults().with_session_payload(payload)
        ours = wire.preset_input(model)
        assert (ours.encoding, ours.rate) == (server.input_audio_format,
                                              server.input_sample_rate_hz), model
        stated = {"input_audio_format": server.input_audio_format,
                  "audio": {"input": {
                      "format": realtime_audio_format_object(
                          server.input_audio_format, sample_rate_hz=server.input_sample_rate_hz),
                      "sample_rate_hz": server.input_sample_rate_hz}}}
        assert wire.stated_input(stated, wire.AudioFormat()) == ours
    with pytest.raises(ValueError, match="cannot send"):
        wire.stated_input({"input_audio_format": "g711_ulaw"}, wire.AudioFormat())
