"""A process that exits with a conversation running (SIGTERM raised as SystemExit)
ends the conversation first: its log says so, and nothing calls the echo canceller
after livekit disposed it at exit (exit_guard.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np, soundfile
from app.flow.conversation import ConversationOptions, build_session
from app.model.contract import BackendSpec, Decision, ModelSource, Output, Persona

class Listener:
    spec = BackendSpec(family="fake", unit_ms=500, audio_in_rate=16000,
                       audio_out_rate=24000, frames_per_unit=1, native_duplex=False)
    def start(self, persona): pass
    def step(self, unit, control): return iter([Output(decision=Decision.LISTEN)])
    def interrupt(self): pass
    def heard(self, text): pass
    def close(self): pass

folder = Path(sys.argv[1])
mic = folder / "room.wav"
noise = 0.1 * np.random.default_rng(0).standard_normal(16000 * 20)
soundfile.write(mic, noise.astype(np.float32), 16000)
options = ConversationOptions(model=ModelSource(local_dir=folder), persona=Persona("t", "."),
                              mic=mic, loop_files=True, speaker="null",
                              record_dir=folder / "recordings")
session = build_session(Listener(), options)
session.start()
time.sleep(1.5)
raise SystemExit(143)  # what app/termination.py does on SIGTERM
"""


def test_exiting_mid_conversation_ends_it_first(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 143, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    log = next((tmp_path / "recordings").rglob("events.jsonl"))
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["event"] == "ended"
    assert last["reason"] == "the app is exiting"
