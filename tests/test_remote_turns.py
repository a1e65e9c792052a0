"""A turn-based model (the tiny Qwen2.5-Omni) behind `duetto serve`, through the app's
session: the session ends the user's turn, the remote backend commits it, the answer
streams back and plays, what plays is acknowledged as it plays, and a barge-in cuts it
(the server told what was heard of it)."""

from __future__ import annotations

import time

import pytest
import tiny_models
from duplex_server import ServerThread
from live_conversation import LiveConversation, rms_db, window
from speech import needs_espeak, speak

from app.flow.events import EventKind
from app.model.contract import ModelSource, Persona, Quant
from app.model.remote.backend import RemoteBackend
from app.serve.served import ServedSession

qwen_tiny_factory = tiny_models.qwen_tiny_factory

pytestmark = [needs_espeak, pytest.mark.slow]

AUDIBLE_DB = -40.0
SILENT_DB = -60.0
PERSONA = Persona("test", "Answer briefly.")


def test_a_turn_based_model_on_a_server_answers_turns_and_is_interrupted(
        qwen_tiny_factory, tmp_path, monkeypatch):
    acks: list[tuple[float, str, int, bool]] = []
    real_ack = ServedSession.playback_ack

    async def recording_ack(self, event):  # the server's own handler still runs
        acks.append((time.monotonic(), event.get("response_id"), event.get("played_ms"),
                     bool(event.get("truncate"))))
        await real_ack(self, event)

    monkeypatch.setattr(ServedSession, "playback_ack", recording_ack)
    served = tiny_models.loaded_backend(qwen_tiny_factory(min_answer_tokens=250))
    question = speak("Could you tell me what you see on the table?")
    interruption = speak("Wait, stop, I have another question for you.")
    with ServerThread(served) as server:
        remote = RemoteBackend(address=server.address)
        remote.load(ModelSource(), Quant.BF16, lambda *_: None)
        assert not remote.spec.native_duplex and "turn-based" in remote.describe()
        with LiveConversation(None, tmp_path, backend=remote, persona=PERSONA) as conv:
            conv.wait_until(0.3)
            asked = conv.say(question)
            question_end = asked + len(question) / 16000
            speaking = conv.wait_for(EventKind.STATE, 60, state="speaking")
            conv.wait_until(speaking.t + 2.0)
            barge_at = conv.say(interruption)
            barge_end = barge_at + len(interruption) / 16000
            conv.wait_for(EventKind.STATE, 10, after=barge_at, state="interrupted")
            heard = conv.wait_for(EventKind.HEARD, 20, after=barge_at)
            conv.wait_until(barge_end + 0.3)
        remote.close()
    assert speaking.t > question_end  # it answered the turn once it had ended
    assert conv.session.controller.barge_ins == 1
    recording, rate = conv.recording()
    right = recording[:, 1]
    assert rms_db(window(right, rate, speaking.t + 0.1, speaking.t + 1.5)) > AUDIBLE_DB
    assert rms_db(window(right, rate, barge_at + 0.5, barge_end)) < SILENT_DB
    rid = heard.data["response"]
    wire_id = remote._reader.wire_ids[rid]
    played = [ms for _, r, ms, cut in acks if r == wire_id and not cut]
    cuts = [ms for _, r, ms, cut in acks if r == wire_id and cut]
    # Acknowledged as it played, a few times a second (how much played before the
    # barge-in depends on how fast the loaded test machine streams the answer), then
    # cut where it was heard.
    assert len(played) >= 2 and played == sorted(set(played)), acks
    assert 0 < played[-1] <= 1000 * (barge_at - speaking.t) + 500, (played, barge_at)
    assert cuts == [played[-1]], acks


def test_a_retracted_early_answer_is_kept_out_of_the_served_models_memory(
        qwen_tiny_factory, monkeypatch):
    """The session started answering before the turn surely ended and takes it back
    (the user went on): the server stops it and is told nothing of it was heard."""
    import numpy as np

    from app.model.contract import Control, Unit

    acks: list[tuple[str, int, bool]] = []
    heard: list[str] = []
    real_ack = ServedSession.playback_ack

    async def recording_ack(self, event):
        acks.append((event.get("response_id"), event.get("played_ms"),
                     bool(event.get("truncate"))))
        await real_ack(self, event)

    monkeypatch.setattr(ServedSession, "playback_ack", recording_ack)
    served = tiny_models.loaded_backend(qwen_tiny_factory(min_answer_tokens=250))
    real_heard = served.heard
    served.heard = lambda text: (heard.append(text), real_heard(text))
    question = speak("What is on the table?")
    with ServerThread(served) as server:
        remote = RemoteBackend(address=server.address)
        remote.load(ModelSource(), Quant.BF16, lambda *_: None)
        remote.start(PERSONA)
        units = [question[i:i + 16000] for i in range(0, len(question), 16000)]
        for i, audio in enumerate(units):
            audio = np.pad(audio, (0, 16000 - len(audio)))
            last = i == len(units) - 1
            outputs = remote.step(Unit(i, float(i), 1.0, 16000, audio), Control(turn_ended=last))
        answer = iter(outputs)
        first = next(out for out in answer if out.speech is not None)  # it answers...
        remote.interrupt()  # ...the session takes it back
        list(answer)
        remote.retract()
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.05)
        remote.close()
    wire_id = remote._reader.wire_ids[first.speech.response_id]
    assert (wire_id, 0, True) in acks, acks
    assert heard == [""], heard  # the served model keeps none of its answer
