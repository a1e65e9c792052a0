"""MicrophoneSource on the real sounddevice and PortAudio, no sound card needed.

ALSA's `null` plugin, named in a private ~/.asoundrc, shows up in PortAudio as an input
device that delivers silence as fast as it is read. That checks what the fakes cannot:
the real callback signature, the real time struct and flags, the real stream clock, and
a real stop. It runs in a subprocess because PortAudio reads the ALSA configuration once,
when sounddevice is first imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ALSA is Linux only"),
]

SCRIPT = textwrap.dedent(
    """
    import json, time
    from app.capture.devices import list_audio_devices
    from app.capture.microphone import MicrophoneSource

    class CountingSink:
        def __init__(self):
            self.blocks = self.samples = 0
            self.first = self.last = None
            self.ordered = True
            self.kinds = set()
        def push_audio(self, samples, sample_rate, capture_time=None):
            self.kinds.add((str(samples.dtype), samples.ndim, sample_rate))
            if self.last is not None and capture_time < self.last:
                self.ordered = False
            self.first = capture_time if self.first is None else self.first
            self.last = capture_time
            self.blocks += 1
            self.samples += len(samples)

    names = [d.name for d in list_audio_devices().inputs]
    if "duettonull" not in names:
        print(json.dumps({"skip": f"no ALSA null device here (inputs: {names})"}))
        raise SystemExit
    sink, events = CountingSink(), []
    mic = MicrophoneSource(sink, "duettonull", sample_rate=16000, on_event=events.append)
    began = time.monotonic()
    mic.start()
    time.sleep(0.3)
    stop_began = time.monotonic()
    ended = mic.stop()
    print(json.dumps({
        "ended": ended, "stop_s": time.monotonic() - stop_began,
        "events": [str(e.kind) for e in events], "started": events[0].message,
        "blocks": sink.blocks, "samples": sink.samples, "ordered": sink.ordered,
        "kinds": sorted(map(list, sink.kinds)),
        "first_after_start": sink.first - began, "last_before_now": time.monotonic() - sink.last,
    }))
    """
)


def test_real_portaudio_stream_through_the_alsa_null_device(tmp_path):
    (tmp_path / ".asoundrc").write_text("pcm.duettonull {\n    type null\n}\n")
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("ALSA_CONFIG_PATH", None)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True,
        timeout=45,
    )  # fmt: skip
    if done.returncode != 0 and "PortAudio is not installed" in done.stderr:
        pytest.skip("PortAudio (libportaudio2) is not installed")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["ended"] is True and result["stop_s"] < 1.0
    assert result["events"] == ["started", "stopped"]
    assert "16000 Hz, 1 ch" in result["started"]
    assert result["blocks"] > 0 and result["samples"] >= result["blocks"]
    assert result["kinds"] == [["float32", 1, 16000]]
    # ADC times were mapped onto time.monotonic(): inside the time the stream ran.
    assert result["ordered"]
    assert -0.5 < result["first_after_start"] < 0.5
    assert -0.5 < result["last_before_now"] < 1.0
