"""The tiny MiniCPM-o through the real session, from files, in real time.

The camera is a video file and the microphone a WAV, as in the self-check. The tiny
random model speaks on a schedule (app/model/minicpm_o/schedule.py, the test
instrument: large logit biases in units 4-5 and 9-10, listening elsewhere); everything
else is the real path: the timeline cuts 1 s units with one frame each, the backend
embeds the frame and the audio and runs the duplex decoder, and the session reads its
text-only output through native.py (a silent stand-in for the missing speech).

The last test has the model answer the user (ReplySchedule, the instrument's reply
script: five units from the unit in which the user fell quiet) in a live room: the user
asks, the answer's speech (the tiny speech decoder and token2wav) reaches the speaker,
the user talks over it and the speaker falls silent at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from live_conversation import LiveConversation, rms_db, window
from media import write_video
from minicpmo_tiny import tiny_folder
from speech import needs_espeak, speak

from app.flow.conversation import ConversationOptions, build_session, load_backend
from app.flow.events import EventKind
from app.model.contract import ModelSource, Persona, Quant
from app.model.minicpm_o import schedule
from app.model.minicpm_o.backend import MiniCPMOBackend

pytestmark = pytest.mark.slow

RUNS = [(4, 6), (9, 11)]  # units the model speaks in
AUDIBLE_DB = -40.0  # the tiny voice is about -26 dBFS RMS
SILENT_DB = -60.0


def _scheduled_copy(folder: Path, runs) -> Path:
    """The shared tiny checkpoint's files, linked, with its own schedule."""
    for path in tiny_folder().iterdir():
        if path.name != schedule.META:
            (folder / path.name).symlink_to(path)
    (folder / schedule.META).write_text((tiny_folder() / schedule.META).read_text())
    schedule.write(folder, runs)
    return folder


def test_frames_reach_the_units_and_runs_of_speech_drive_the_controller(tmp_path):
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    _scheduled_copy(model_dir, RUNS)
    video = write_video(tmp_path / "desk.avi", frames=100, fps=10, width=160, height=120)
    mic = tmp_path / "room.wav"
    soundfile.write(mic, np.zeros(16000 * 20, np.float32), 16000)
    options = ConversationOptions(
        model=ModelSource(local_dir=model_dir), family="minicpm-o",
        persona=Persona("t", "Be brief."), mic=mic, camera=video, loop_files=True,
        speaker="null")
    backend = load_backend(options, lambda *_: None)
    model = backend.loaded.model
    embedded: list[tuple[int, ...]] = []
    real_embed = model.embed_frame
    model.embed_frame = lambda rgb: (embedded.append(rgb.shape), real_embed(rgb))[1]
    session = build_session(backend, options)
    events = []
    session.subscribe(events.append)
    session.start()
    def heard_out() -> bool:
        """14 units computed, and the second run's speech played to its end (the
        playback clock runs behind the model by the stream's cushion)."""
        states = [e.data["state"] for e in events if e.kind is EventKind.STATE]
        return len(backend.results) >= 14 and states.count("listening") >= 3

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not heard_out():
            time.sleep(0.1)
    finally:
        session.stop()
    errors = [e.data for e in events if e.kind is EventKind.ERROR]
    assert not errors, errors
    results = backend.results
    assert len(results) >= 14, f"only {len(results)} units in 60 s"

    # Every unit brought its camera frame to the model: counted at the timeline (the
    # session's UNIT events), at the backend, and at the model's frame encoder.
    units = [e for e in events if e.kind is EventKind.UNIT]
    frames = [e.data["frames"] for e in units]
    assert sum(frames) == backend.counts.frames == len(embedded)
    # One frame a unit (the first may start before the camera's first frame), except
    # where a model that fell behind had queued units' frames dropped (counted).
    assert all(n <= 1 for n in frames), frames
    assert frames[1:].count(0) <= session.dropped_frames, (frames, session.dropped_frames)
    assert all(shape[2] == 3 for shape in embedded)
    assert backend.counts.audio_positions == 10 * backend.counts.units

    # The model spoke exactly in its scheduled units, and ended each run itself.
    speaking = [r.index for r in results if r.speaking]
    assert speaking == [4, 5, 9, 10], speaking
    assert [r.index for r in results if r.turn_ended] == [5, 10]

    # The controller changed state only where the runs started and ended (as heard).
    states = [(round(e.t, 2), e.data["state"], e.data.get("reason"))
              for e in events if e.kind is EventKind.STATE]
    changes = [s for _, s, _ in states[1:]]  # after "session started"
    assert changes == ["speaking", "listening", "speaking", "listening"], states
    start1, end1, start2, end2 = (t for t, _, _ in states[1:])
    # Unit k is heard over [k, k+1) s; its output is made after it ends and joins the
    # live stream: heard after unit 4 ended, and each run lasts its 2 units, plus at most
    # the cushion the player gathers again if the 1 s chunks came late and it ran dry
    # (it grows its cushion after each underrun, up to 1.5 s).
    cushion = 1.5  # Player's max_prebuffer_seconds
    assert 5.0 < start1 < 7.5, states
    assert 2.0 - 0.15 < end1 - start1 < 2.0 + cushion, states
    assert start2 > 10.0 and start2 - end1 > 3.0 - cushion, states
    assert 2.0 - 0.15 < end2 - start2 < 2.0 + cushion, states
    responses = [e.data.get("response") for e in events
                 if e.kind is EventKind.STATE and e.data["state"] == "speaking"]
    assert responses == [1, 2]
    # Its words arrive as text (subtitles), each in the run that said it.
    texts = [(e.data["response"], e.data["text"]) for e in events if e.kind is EventKind.TEXT]
    assert texts == [(1, schedule.SAID), (1, schedule.SAID), (2, schedule.SAID),
                     (2, schedule.SAID)], texts
    # And as subtitles when their unit's (silent) place in the stream plays: the first
    # words as the run starts.
    spoken = [(e.t, e.data["response"], e.data["text"]) for e in events
              if e.kind is EventKind.SPOKEN]
    assert [(r, t) for _, r, t in spoken] == texts, spoken
    assert spoken[0][0] == pytest.approx(start1, abs=0.1), (spoken, states)


@needs_espeak
def test_the_answer_is_heard_after_the_users_turn_and_a_barge_in_silences_it(tmp_path):
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    _scheduled_copy(model_dir, RUNS)
    schedule.write_replies(model_dir, 5)  # a long answer: still being made at the barge-in
    backend = MiniCPMOBackend()
    backend.load(ModelSource(local_dir=model_dir), Quant.BF16, lambda *_: None)
    question = speak("Could you tell me what you see on the table?")
    # One breath: a pause after "Wait, stop," may rightly be judged the end of a turn
    # (the end-of-turn model hears a finished sentence), and the model may then answer.
    interruption = speak("Wait I have another question for you about the table")
    silenced: list[float] = []
    with LiveConversation(None, tmp_path / "rec", backend=backend,
                          persona=Persona("t", "Be brief.")) as conv:
        for name in ("pause", "flush"):
            real = getattr(conv.player, name)
            setattr(conv.player, name,
                    lambda real=real: (silenced.append(conv.room.now), real()))
        asked_at = conv.say(question)
        asked_end = asked_at + len(question) / 16000
        speaking = conv.wait_for(EventKind.STATE, 30, after=asked_end, state="speaking")
        conv.wait_until(speaking.t + 0.8)  # into the answer's first second of speech
        barge_at = conv.say(interruption)
        barge_end = barge_at + len(interruption) / 16000
        conv.wait_for(EventKind.STATE, 10, after=barge_at, state="interrupted")
        stop = conv.wait_for(EventKind.LATENCY, 10, kind="stop")
        conv.wait_until(barge_end + 0.2)
    errors = [e.data for e in conv.events if e.kind is EventKind.ERROR]
    assert not errors, errors
    assert conv.session.controller.barge_ins == 1, conv.states()
    recording, rate = conv.recording()
    right = recording[:, 1]
    # Nothing while the user asked; the answer's speech once the model took the turn.
    assert rms_db(window(right, rate, 0.0, asked_end)) < SILENT_DB
    assert rms_db(window(right, rate, speaking.t + 0.05, barge_at)) > AUDIBLE_DB
    # The barge-in silenced the speaker within one block of being heard, and nothing of
    # the cut answer (two more units of it were due) played while the user talked.
    assert silenced and barge_at < silenced[0] < barge_at + 0.3, (barge_at, silenced)
    assert rms_db(window(right, rate, silenced[0] + 0.015, barge_end)) < SILENT_DB
    assert 0.0 < stop.data["seconds"] < 0.25
    # The model closed the cut turn itself at the forced listen (its answer dropped).
    first = next(r.index for r in backend.results if r.speaking)
    assert any(r.closed_turn for r in backend.results[first:]), [
        (r.index, r.speaking, r.turn_ended, r.closed_turn) for r in backend.results]
