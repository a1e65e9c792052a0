"""Faults that must not refuse a conversation: a camera that will not open, a recordings
folder that cannot be written, a disk that fills up mid-conversation. Each leaves the
conversation going, without video or without recording, and says so in an event. And
an overflow of the audio buffer is reported off the audio callback's thread."""

from __future__ import annotations

import errno
import threading
import time
import wave

import numpy as np
import pytest
import soundfile
from listening_backend import ListeningBackend as _Listener
from media import write_video

from app.flow.conversation import ConversationOptions, build_session, open_output
from app.flow.events import EventKind
from app.flow.session import Session, SessionConfig
from app.flow.wav_writer import PcmWavWriter
from app.model.contract import (
    ModelSource,
    Persona,
)

pytestmark = pytest.mark.timeout(60)




def _options(tmp_path, **kwargs) -> ConversationOptions:
    mic = tmp_path / "room.wav"
    soundfile.write(mic, np.full(16000 * 20, 0.1, np.float32), 16000)
    return ConversationOptions(model=ModelSource(local_dir=tmp_path), persona=Persona("t", "."),
                               mic=mic, loop_files=True, speaker="null", **kwargs)


def _run(session, seconds: float) -> list:
    events = []
    session.subscribe(events.append)
    session.start()
    try:
        time.sleep(seconds)
    finally:
        session.stop()
    return events


def _of(events, kind):
    return [e for e in events if e.kind is kind]


@pytest.mark.parametrize("camera", ["missing.avi", "not-a-video.avi", "no-frames.avi"])
def test_a_camera_that_will_not_open_leaves_the_conversation_without_video(tmp_path, camera):
    path = tmp_path / camera
    if camera == "not-a-video.avi":
        path.write_bytes(b"not a video at all")
    elif camera == "no-frames.avi":
        write_video(path, frames=0)
    session = build_session(_Listener(), _options(tmp_path, camera=path))
    events = _run(session, 1.5)
    assert _of(events, EventKind.UNIT), "the conversation did not go on"
    assert not any(e.data["frames"] for e in _of(events, EventKind.UNIT))
    failed = [e for e in _of(events, EventKind.DEVICE) if e.data["kind"] == "failed"]
    assert len(failed) == 1 and failed[0].data["source"] == "camera"
    assert camera in failed[0].data["message"]
    assert not _of(events, EventKind.ERROR)


def test_a_recordings_folder_that_cannot_be_made_leaves_the_conversation_unrecorded(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the recordings folder should be")
    session = build_session(_Listener(), _options(tmp_path, record_dir=blocker / "recordings"))
    events = _run(session, 1.2)
    assert _of(events, EventKind.UNIT), "the conversation did not go on"
    [note] = _of(events, EventKind.RECORDING)
    assert note.data["recording"] is False and note.data["folder"] is None
    assert "Recording is off" in note.data["message"] and "goes on" in note.data["message"]
    assert session.recorder is None


def test_a_read_only_recordings_folder_leaves_the_conversation_unrecorded(tmp_path, monkeypatch):
    # Tests may run as root, who writes anywhere: the folder refuses as a read-only one would.
    folder = tmp_path / "recordings"
    folder.mkdir()
    real_mkdir = type(folder).mkdir

    def read_only_mkdir(self, *args, **kwargs):
        if self.parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(folder), "mkdir", read_only_mkdir)
    session = build_session(_Listener(), _options(tmp_path, record_dir=folder))
    events = _run(session, 1.2)
    assert _of(events, EventKind.UNIT)
    [note] = _of(events, EventKind.RECORDING)
    assert note.data["recording"] is False
    assert "cannot be written" in note.data["message"] and str(folder) in note.data["message"]


def test_a_full_disk_stops_the_recording_keeps_what_was_written_and_goes_on(tmp_path, monkeypatch):
    written = 0  # frames that reached the file before the disk filled up
    real_write = PcmWavWriter.write

    def filling_disk(self, frames):
        nonlocal written
        if written >= 24000:  # a second of audio, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_write(self, frames)
        written += len(frames)

    monkeypatch.setattr(PcmWavWriter, "write", filling_disk)
    session = build_session(_Listener(), _options(tmp_path, record_dir=tmp_path / "rec"))
    events = _run(session, 3.0)
    notes = _of(events, EventKind.RECORDING)
    assert [n.data["recording"] for n in notes] == [True, False]  # started, then stopped once
    stopped = notes[1]
    assert "the disk is full" in stopped.data["message"]
    assert "goes on without recording" in stopped.data["message"]
    # The conversation went on after the failure, and ended normally.
    assert [e for e in _of(events, EventKind.UNIT) if e.t > stopped.t + 0.5]
    assert _of(events, EventKind.ENDED) and not _of(events, EventKind.ERROR)
    # What was written before is kept, readable by a header-trusting reader.
    folder = session.recorder.folder
    assert stopped.data["folder"] == str(folder)
    with wave.open(str(folder / "conversation.wav")) as kept:
        assert kept.getnframes() == written  # every frame that reached the disk
        seconds = kept.getnframes() / kept.getframerate()
    assert f"{seconds:.1f} s" in stopped.data["message"]
    assert (folder / "events.jsonl").read_text().count("\n") > 3  # the log is kept too


def test_two_sessions_in_the_same_second_record_into_two_folders(tmp_path):
    sessions = [build_session(_Listener(), _options(tmp_path, record_dir=tmp_path / "rec"))
                for _ in range(2)]
    for session in sessions:
        session.start()
    time.sleep(0.8)
    for session in sessions:
        session.stop()
    folders = {s.recorder.folder for s in sessions}
    assert len(folders) == 2
    for folder in folders:
        with wave.open(str(folder / "conversation.wav")) as w:
            assert w.getnframes() > 0


def test_an_overflow_is_reported_off_the_audio_callback_thread(tmp_path):
    """The callback only copies into the ring: the overflow's event (and the recorder's
    line and disk sync behind it) come from the session's own thread."""
    player, _ = open_output("null")
    config = SessionConfig(record_dir=tmp_path / "rec", audio_capacity_seconds=1.0)
    session = Session(_Listener(), player, Persona("t", "."), config)
    seen: list[tuple[EventKind, str]] = []
    session.subscribe(lambda e: seen.append((e.kind, threading.current_thread().name)))
    gate = threading.Event()
    session.cleaned_tap = lambda *_: gate.wait(10)  # the listener stalls on its first tick
    session.start()
    recorder = session.recorder
    real_event = recorder.event
    recorder_threads: list[str] = []

    def logged_event(*args, **kwargs):
        recorder_threads.append(threading.current_thread().name)
        real_event(*args, **kwargs)

    recorder.event = logged_event

    def callback():  # 2 s of 20 ms blocks, as PortAudio's thread would push them
        for _ in range(100):
            session.timeline.push_audio(np.zeros(320, np.float32), 16000)

    pusher = threading.Thread(target=callback, name="portaudio-callback")
    pusher.start()
    pusher.join()
    assert session.timeline.stats().overflows >= 1
    gate.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(k is EventKind.OVERFLOW for k, _ in seen):
        time.sleep(0.05)
    session.stop()
    overflow_threads = {name for kind, name in seen if kind is EventKind.OVERFLOW}
    assert overflow_threads == {"session-listener"}
    assert "portaudio-callback" not in {name for _, name in seen}
    assert "portaudio-callback" not in recorder_threads
    logged = (recorder.folder / "events.jsonl").read_text()
    assert '"event": "overflow"' in logged


def test_no_speaker_is_one_clear_sentence_not_a_portaudio_error(monkeypatch):
    """This machine has no sound card: PortAudio says 'Error querying device -1'."""
    from app.capture.base import CaptureError

    class _NoDevices:
        class PortAudioError(Exception):
            pass

        def query_devices(self, device, kind):
            raise self.PortAudioError("Error querying device -1")

    monkeypatch.setattr("app.flow.conversation.load_sounddevice", _NoDevices)
    with pytest.raises(CaptureError) as refused:
        open_output(None)
    message = str(refused.value)
    assert message.startswith("the default speaker could not be opened")
    assert "Error querying device -1" in message and "'null'" in message
