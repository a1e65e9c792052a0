"""Reading a vLLM-Omni server's events (shapes from its Realtime Duplex API reference).

A vLLM-Omni server marks no unit ends: the first decision-bearing event of a unit
answers it, the transcript of an audio delta arrives after it, and either spelling of
the audio delta (beta `response.audio.delta`, GA `response.output_audio.delta`) is read.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.model.contract import BackendError, Decision
from app.model.remote import wire
from app.model.remote.answers import AnswerReader


def _delta(kind: str, rid: str, seconds: float) -> dict:
    pcm = wire.pcm16_bytes(np.full(round(24000 * seconds), 0.25, np.float32))
    return {"type": kind, "response_id": rid, "delta": wire.b64(pcm), "format": "pcm16",
            "sample_rate_hz": 24000, "server_event_seq": 5,
            "metadata": {"epoch": 0, "model_speak": True, "end_of_turn": False,
                         "audio_duration_ms": round(1000 * seconds)}}


def test_a_vllm_omni_response_read_unit_by_unit():
    reader = AnswerReader(marks_units=False)
    listen = reader.read({"type": "response.listen", "epoch": 0,
                          "response": {"status": "listening"}}, 0)
    assert listen.unit_answered and [o.decision for o in listen.outputs] == [Decision.LISTEN]
    assert not reader.read({"type": "response.created", "response_id": "resp_01"}, 1).outputs
    assert not reader.read({"type": "response.speak", "response_id": "resp_01"}, 1).outputs
    first = reader.read(_delta("response.audio.delta", "resp_01", 1.0), 1)
    assert first.unit_answered and first.outputs[0].decision is Decision.SPEAK
    (chunk,) = reader.flush()
    assert chunk.speech.response_id == 1 and len(chunk.speech.audio) == 24000
    assert np.allclose(chunk.speech.audio, 0.25, atol=1e-4)
    text = reader.read({"type": "response.audio_transcript.delta", "response_id": "resp_01",
                        "delta": "It is sunny"}, 2)
    assert [o.text for o in text.outputs] == ["It is sunny"] and not text.unit_answered
    second = reader.read(_delta("response.output_audio.delta", "resp_01", 0.5), 2)
    assert second.unit_answered
    reader.flush()
    done = reader.read({"type": "response.done", "response_id": "resp_01",
                        "response": {"id": "resp_01", "status": "completed"}}, 3)
    assert done.turn_answered and not done.outputs
    assert reader.completed == [("resp_01", 1500.0)]  # acknowledged as played in full
    end = reader.read({"type": "response.listen", "response": {"status": "listening"}}, 3)
    assert [o.decision for o in end.outputs] == [Decision.END_OF_TURN]
    # After a barge-in, what was heard in words becomes milliseconds.
    assert reader.heard_ms(1, "It is sunny") == 1000.0
    assert reader.heard_ms(1, "") == 0.0


def test_a_server_error_becomes_a_message():
    reader = AnswerReader()
    with pytest.raises(BackendError, match=r"capacity reached.*duplex_session_busy"):
        reader.read({"type": "error", "error": {
            "type": "rate_limit_error", "code": "duplex_session_busy",
            "message": "duplex session capacity reached (max_sessions=4)"}}, 0)
