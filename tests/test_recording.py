"""Session recording: aligned stereo, a readable log, unique folders, a valid header at
every moment, failing writes (kill -9 and SIGTERM: test_recording_crash.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import wave

import numpy as np
import pytest
import soundfile

from app.flow.recording import SessionRecorder, read_events

RATE = 24000


def test_channels_are_aligned_by_clock_time_not_by_arrival(tmp_path):
    rec = SessionRecorder(tmp_path, RATE)
    click_at = 1.2345
    user = np.zeros(2 * RATE, np.float32)
    user[round(click_at * RATE)] = 0.9
    assistant = np.zeros(RATE, np.float32)
    assistant[round((click_at - 0.8) * RATE)] = 0.9
    # The assistant's audio arrives first and starts later on the clock.
    rec.write_assistant(assistant, t=0.8)
    for start in range(0, len(user), 480):  # the mic in 20 ms blocks
        rec.write_user(user[start : start + 480], t=start / RATE)
    rec.close()
    data, rate = soundfile.read(tmp_path / "conversation.wav")
    left_click = int(np.argmax(np.abs(data[:, 0])))
    right_click = int(np.argmax(np.abs(data[:, 1])))
    assert rate == RATE
    assert abs(left_click - right_click) / RATE <= 0.001


def test_a_stalled_channel_does_not_hold_the_other_back(tmp_path):
    rec = SessionRecorder(tmp_path, RATE, max_lag_seconds=0.5)
    for second in range(3):
        rec.write_user(np.full(RATE, 0.1, np.float32), t=float(second))
    # Nothing from the assistant: the user's audio is still written, up to the lag.
    rec._commit()
    assert soundfile.info(str(tmp_path / "conversation.wav")).frames >= int(2.5 * RATE)
    # Assistant audio for a stretch already written is dropped and counted.
    rec.write_assistant(np.ones(RATE, np.float32), t=0.0)
    assert rec.late_samples == RATE
    rec.close()


def test_events_are_json_lines_on_the_session_clock(tmp_path):
    rec = SessionRecorder(tmp_path, RATE)
    rec.event("state", 0.5, state="listening")
    rec.event("text", 1.25, text="héllo")
    rec.close()
    events = read_events(tmp_path / "events.jsonl")
    assert events == [
        {"t": 0.5, "event": "state", "state": "listening"},
        {"t": 1.25, "event": "text", "text": "héllo"},
    ]


def test_a_torn_last_log_line_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"t": 0.1, "event": "a"}\n{"t": 0.2, "ev', encoding="utf-8")
    assert read_events(path) == [{"t": 0.1, "event": "a"}]


def test_two_recordings_started_at_once_get_folders_of_their_own(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from app.flow.recording import unique_folder

    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: unique_folder(tmp_path, "20260101-120000"), range(8)))
    names = sorted(f.name for f in folders)
    assert len(set(names)) == 8
    assert names[0] == "20260101-120000" and "20260101-120000-8" in names


def test_a_channel_that_stops_is_written_alone_after_the_stall_time(tmp_path):
    now = [0.0]
    rec = SessionRecorder(tmp_path, RATE, stall_seconds=0.5, clock=lambda: now[0])
    for n in range(50):  # 1 s of the user, the assistant silent from the start
        now[0] = n * 0.02
        rec.write_user(np.full(480, 0.1, np.float32), t=n * 0.02)
    # Written as soon as the assistant had been silent 0.5 s, then with every block.
    assert rec.seconds_written == pytest.approx(1.0)
    rec.close()


def test_the_header_counts_what_is_committed_while_the_file_is_open(tmp_path):
    now = [0.0]
    rec = SessionRecorder(tmp_path, RATE, commit_interval=0.5, clock=lambda: now[0])
    path = tmp_path / "conversation.wav"
    with wave.open(str(path)) as w:  # valid from the first moment, empty
        assert w.getnframes() == 0
    for n in range(60):
        now[0] = n * 0.02
        rec.write_user(np.full(480, 0.2, np.float32), t=n * 0.02)
        rec.write_assistant(np.full(480, 0.2, np.float32), t=n * 0.02)
    with wave.open(str(path)) as w:
        frames = w.getnframes()
    assert frames == round(rec.seconds_committed * RATE)
    assert 1.2 - 0.5 <= frames / RATE <= 1.2
    rec.close()
    with wave.open(str(path)) as w:
        assert w.getnframes() == 60 * 480


def test_a_write_refused_by_the_system_stops_the_recording_and_keeps_the_rest(tmp_path):
    """A real failing write: the file-size limit (RLIMIT_FSIZE) makes write() fail, as a
    full disk does, in a child process."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        import numpy as np
        from pathlib import Path
        from app.flow.recording import SessionRecorder
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a death
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        failures = []
        rec = SessionRecorder(Path({str(tmp_path)!r}), {RATE}, on_failure=failures.append)
        block = np.full(480, 0.25, np.float32)
        for n in range(500):  # 10 s: far more than 200 kB
            rec.write_user(block, n * 0.02)
            rec.write_assistant(block, n * 0.02)
        rec.close()
        print(len(failures))
        print(failures[0])
        """
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    count, message = done.stdout.splitlines()[:2]
    assert count == "1" and "Recording stopped" in message and "goes on" in message
    with wave.open(str(tmp_path / "conversation.wav")) as w:
        seconds = w.getnframes() / w.getframerate()
    # 200 kB hold about 2 s of 16-bit stereo at 24 kHz: all of it is kept and readable.
    assert 1.5 <= seconds <= (200_000 - 44) / (4 * RATE)
    assert f"{seconds:.1f} s" in message
