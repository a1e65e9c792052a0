"""A recording cut off by kill -9 or SIGTERM is read the same by Python's `wave`, sox
and libsndfile: all but at most the last second after kill -9, everything after SIGTERM.

The recorder runs in a real child process, fed in real time from a background thread
(as the session's listener feeds it) while the main thread waits (as the window's loop
does), and the child is killed mid-recording.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import wave

import numpy as np
import pytest
import soundfile

RATE = 24000
CHILD = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    from pathlib import Path
    from app.flow.recording import SessionRecorder
    from app.termination import exit_on_sigterm

    exit_on_sigterm()  # what `duetto` does first (app/__main__.py)
    rec = SessionRecorder(Path(sys.argv[1]), {rate})

    def feed():  # 20 ms of both channels every 20 ms, like the session's listener
        block = np.full(480, 0.25, np.float32)
        start = time.monotonic()
        print(start, flush=True)
        n = 0
        while True:
            t = n * 0.02
            rec.write_user(block, t)
            rec.write_assistant(-block, t)
            if n % 25 == 0:
                rec.event("tick", t, n=n)
            n += 1
            time.sleep(max(0.0, start + n * 0.02 - time.monotonic()))

    threading.Thread(target=feed, daemon=True).start()
    threading.Event().wait()  # the main loop
    """
).format(rate=RATE)


def _record_then(tmp_path, sig: signal.Signals, seconds: float) -> tuple[float, int]:
    """Record for `seconds`, send `sig`; return (seconds fed by then, exit status)."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                            stdout=subprocess.PIPE, env=env)
    started = float(proc.stdout.readline())  # CLOCK_MONOTONIC is shared between processes
    time.sleep(max(0.0, started + seconds - time.monotonic()))
    fed = time.monotonic() - started
    os.kill(proc.pid, sig)
    return fed, proc.wait(timeout=10)


def _readers(path) -> dict[str, float]:
    """Seconds of audio each reader finds, after checking what it reads."""
    found = {}
    with wave.open(str(path)) as w:  # raises on a header that is not a WAV's
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, RATE, 2)
        frames = w.getnframes()
        pcm = np.frombuffer(w.readframes(frames), "<i2").reshape(-1, 2) / 32767.0
        assert len(pcm) == frames
        assert np.allclose(pcm[:, 0], 0.25, atol=1e-3) and np.allclose(pcm[:, 1], -0.25, atol=1e-3)
        found["wave"] = frames / RATE
    data, rate = soundfile.read(str(path))
    assert rate == RATE and np.allclose(data[:, 0], 0.25, atol=1e-3)
    found["libsndfile"] = len(data) / rate
    if shutil.which("sox") and shutil.which("soxi"):
        samples = subprocess.run(["soxi", "-s", str(path)], capture_output=True, text=True,
                                 check=True).stdout
        found["soxi"] = int(samples) / RATE
        stat = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True,
                              text=True, check=True).stderr
        found["sox stat"] = float(re.search(r"Length \(seconds\):\s*([\d.]+)", stat).group(1))
    return found


def test_kill_minus_9_leaves_every_reader_all_but_the_last_second(tmp_path):
    fed, status = _record_then(tmp_path, signal.SIGKILL, 3.3)
    assert status == -signal.SIGKILL
    found = _readers(tmp_path / "conversation.wav")
    for reader, seconds in found.items():
        assert fed - 1.0 <= seconds <= fed + 0.05, (reader, seconds, fed)
    if not shutil.which("sox"):
        pytest.skip("sox is not installed: read with wave and libsndfile only")


def test_sigterm_finalizes_the_recording_so_every_reader_gets_all_of_it(tmp_path):
    fed, status = _record_then(tmp_path, signal.SIGTERM, 2.7)
    assert status == 128 + signal.SIGTERM  # an exit, not a death by signal
    found = _readers(tmp_path / "conversation.wav")
    for reader, seconds in found.items():
        assert fed - 0.1 <= seconds <= fed + 0.05, (reader, seconds, fed)
    if not shutil.which("sox"):
        pytest.skip("sox is not installed: read with wave and libsndfile only")
