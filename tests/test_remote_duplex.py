"""The remote backend against `duetto serve`, both real, over a real WebSocket.

The served model is the tiny Moshi (native duplex every 80 ms; its random voice speaks
in every frame, so a response with audio comes at once). The server runs on a thread
here, or as `python -m app serve` in a subprocess where the test kills it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from duplex_server import ServerThread

from app.model.contract import BackendError, Control, Decision, ModelSource, Persona, Quant, Unit
from app.model.moshi.backend import MoshiBackend
from app.model.remote.backend import RemoteBackend
from app.serve import cli as serve_cli
from app.serve.server import DuplexServer

moshi_tiny_factory = tiny_models.moshi_tiny_factory
qwen_tiny_factory = tiny_models.qwen_tiny_factory
qwen_tiny = tiny_models.qwen_tiny

pytestmark = pytest.mark.slow

PERSONA = Persona("test", "You are a helpful assistant.")
UNIT = 1280  # 80 ms at 16 kHz: the tiny Moshi's unit on the wire


@pytest.fixture(scope="module")
def moshi(moshi_tiny_factory) -> MoshiBackend:
    backend = MoshiBackend(device="cpu")
    backend.load(ModelSource(local_dir=moshi_tiny_factory()), Quant.BF16, lambda *_: None)
    yield backend
    backend.close()


def _units(start: int, count: int):
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        audio = (0.1 * rng.standard_normal(UNIT)).astype(np.float32)
        yield Unit(i, i * 0.08, 0.08, 16000, audio)


def _client(address: str, **kwargs) -> RemoteBackend:
    remote = RemoteBackend(address=address, **kwargs)
    remote.load(ModelSource(), Quant.BF16, lambda *_: None)
    remote.start(PERSONA)
    return remote


def _step_all(remote: RemoteBackend, units, control: Control | None = None):
    control = control or Control()
    outs = []
    for unit in units:
        outs.append(list(remote.step(unit, control)))
    return outs


def _speech(outs):
    return [o.speech for step in outs for o in step if o.speech is not None]


def test_a_conversation_with_barge_in_and_playback_ack(moshi):
    with ServerThread(moshi) as server:
        remote = _client(server.address)
        assert remote.spec.native_duplex and remote.spec.unit_ms == 80
        assert remote.spec.audio_in_rate == 16000 and remote.spec.audio_out_rate == 24000
        assert "moshi" in remote.describe()
        (session,) = server.server.sessions.values()

        outs = _step_all(remote, _units(0, 6))
        chunks = _speech(outs)
        assert len(chunks) == 6 and all(len(c.audio) == 1920 for c in chunks)
        assert all(c.sample_rate == 24000 for c in chunks)
        assert any(np.abs(c.audio).max() > 0.01 for c in chunks)  # the model's voice
        assert [o.decision for o in outs[1] if o.decision] == [Decision.SPEAK]
        rid = chunks[-1].response_id
        said = "".join(c.text_span for c in chunks)

        # Barge-in: the server cancels the answer; what follows is no longer its speech.
        remote.interrupt()
        muted = _step_all(remote, _units(6, 3), Control(barge_in=True))
        assert not [c for c in _speech(muted) if c.response_id == rid]
        assert all(o.decision is Decision.LISTEN for step in muted for o in step
                   if o.decision)
        # What was heard goes back as a truncating playback ack, in milliseconds.
        remote.heard(said[: len(said) // 2])
        deadline = time.monotonic() + 5
        wire_id = remote._reader.wire_ids[rid]
        while wire_id not in session.played and time.monotonic() < deadline:
            time.sleep(0.02)
        heard_ms = session.played[wire_id]
        assert 0 <= heard_ms < 6 * 80
        assert heard_ms == remote._reader.heard_ms(rid, said[: len(said) // 2])
        remote.close()


def test_resume_after_a_dropped_connection_keeps_the_conversation(moshi):
    with ServerThread(moshi) as server:
        remote = _client(server.address)
        (session,) = server.server.sessions.values()
        before = _speech(_step_all(remote, _units(0, 4)))
        server.call(server.server.drop_connections())
        after = _speech(_step_all(remote, _units(4, 4)))
        # The same session on the server went on: its units continued, none lost.
        assert list(server.server.sessions) == [session.id]
        assert session.attachment == 2
        assert session._unit_index == 8
        assert len(before) == 4 and len(after) == 4
        assert after[0].response_id == before[-1].response_id  # the same answer goes on
        assert remote.notice == ""
        remote.close()


class _Slow:
    """The tiny Moshi, each step started 0.3 s late: a unit is still being answered
    when the test cuts the connection, and the client comes back after the answer was
    made, so the answer can only arrive by the replay."""

    def __init__(self, inner: MoshiBackend) -> None:
        self._inner = inner

    def step(self, unit, control):
        time.sleep(0.3)
        return self._inner.step(unit, control)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_an_answer_made_while_the_connection_was_down_is_replayed(moshi):
    with ServerThread(_Slow(moshi)) as server:
        remote = _client(server.address, answer_timeout_s=5.0)
        (session,) = server.server.sessions.values()
        before = _speech(_step_all(remote, _units(0, 2)))
        link = remote.link
        resume = link.resume

        def late_resume(timeout_s):  # the network comes back after the answer was made
            time.sleep(0.8)
            resume(timeout_s)

        link.resume = late_resume
        result: dict = {}
        stepping = threading.Thread(target=lambda: result.setdefault(
            "outs", list(remote.step(next(_units(2, 1)), Control()))))
        stepping.start()  # the unit is sent; its answer takes 0.3 s
        time.sleep(0.1)
        server.call(server.server.drop_connections())
        stepping.join(20)
        replayed = _speech([result["outs"]])
        assert session.attachment == 2  # resumed once, on a new socket
        assert len(replayed) == 1 and replayed[0].response_id == before[-1].response_id
        assert session._unit_index == 3  # the unit was not taken twice
        remote.close()


def test_a_wrong_token_is_refused_with_a_message(moshi):
    with ServerThread(moshi, token="right-token") as server:
        for token in (None, "wrong-token"):
            with pytest.raises(BackendError, match="refused the token"):
                _client(server.address, token=token)
        remote = _client(server.address, token="right-token")
        assert len(_speech(_step_all(remote, _units(0, 2)))) == 2
        remote.close()


def test_nothing_listens_beyond_localhost_without_a_token(moshi, capsys):
    with pytest.raises(ValueError, match="token is required"):
        DuplexServer(moshi, "tiny", host="0.0.0.0")
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    args = parser.parse_args(["--model", "unused", "--host", "0.0.0.0"])
    os.environ.pop(serve_cli.TOKEN_ENV, None)
    assert serve_cli.run(args) == 2
    assert "a token is required" in capsys.readouterr().err
    # With a token it listens on every address, and still refuses a client without it.
    with ServerThread(moshi, host="0.0.0.0", token="t") as server:
        assert server.server._server.sockets[0].getsockname()[0] == "0.0.0.0"
        with pytest.raises(BackendError, match="refused the token"):
            _client(server.address)
        remote = _client(server.address, token="t")
        assert len(_speech(_step_all(remote, _units(0, 1)))) == 1
        remote.close()


def test_a_server_that_never_answers_times_out_with_a_message():
    # Accepts TCP connections and never says a word: no WebSocket upgrade comes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(BackendError, match="did not answer within 1 s"):
            _client(f"127.0.0.1:{port}", connect_timeout_s=1.0)
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_a_server_that_never_opens_the_session_times_out():
    from websockets.asyncio.server import serve

    async def mute(ws):  # takes the connection and never says a word
        await ws.wait_closed()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    async def start():
        return await serve(mute, "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(BackendError, match="did not open the session within 1 s"):
            _client(f"127.0.0.1:{port}", connect_timeout_s=1.0)
    finally:
        async def stop():
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_nothing_at_the_address_says_so():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BackendError, match="cannot reach the server"):
        _client(f"127.0.0.1:{port}", connect_timeout_s=1.0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(model: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--model", str(model), "--device", "cpu",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("duetto serve did not start")


def test_server_killed_mid_answer_and_restarted(moshi_tiny_factory):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = moshi_tiny_factory()
    proc = _start_server(folder, port)
    try:
        remote = _client(f"127.0.0.1:{port}", connect_timeout_s=3.0, retry_s=0.2)
        kept = _speech(_step_all(remote, _units(0, 4)))  # mid-answer: the model speaks
        assert len(kept) == 4
        proc.kill()
        proc.wait(10)
        with pytest.raises(BackendError, match=r"lost the connection.*recorded up to here"):
            _step_all(remote, _units(4, 3))
        # While it is away, steps yield nothing and do not hang.
        started = time.monotonic()
        assert _speech(_step_all(remote, _units(7, 3))) == []
        assert time.monotonic() - started < 10
        proc = _start_server(folder, port)
        message = ""
        deadline = time.monotonic() + 30
        while not message and time.monotonic() < deadline:
            try:
                _step_all(remote, _units(10, 1))
                time.sleep(0.3)
            except BackendError as exc:
                message = str(exc)
        assert re.search("restarted.*new conversation.*recording here keeps", message)
        again = _speech(_step_all(remote, _units(11, 3)))
        assert len(again) == 3  # the conversation goes on, on a new session
        remote.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_a_served_turn_based_model_answers_the_committed_turn(qwen_tiny):
    from app.model.contract import Voice
    from app.model.qwen_omni.backend import QwenOmniBackend

    qwen = QwenOmniBackend(device="cpu", unit_ms=1000)
    qwen.load(ModelSource(local_dir=qwen_tiny), Quant.BF16, lambda *_: None)
    rng = np.random.default_rng(1)

    def second(i: int) -> Unit:
        return Unit(i, float(i), 1.0, 16000, (0.1 * rng.standard_normal(16000)).astype(np.float32))

    with ServerThread(qwen) as server:
        remote = RemoteBackend(address=server.address, answer_timeout_s=120)
        remote.load(ModelSource(), Quant.BF16, lambda *_: None)
        assert not remote.spec.native_duplex and remote.spec.unit_ms == 1000
        remote.start(Persona("t", "Answer briefly.", voice=Voice(builtin="Chelsie")))
        assert list(remote.step(second(0), Control())) == []  # the turn goes on: no answer
        answer = list(remote.step(second(1), Control(turn_ended=True)))
        chunks = [o.speech for o in answer if o.speech is not None]
        assert chunks and {c.response_id for c in chunks} == {1}
        assert sum(len(c.audio) for c in chunks) > 24000 * 0.3  # speech, at 24 kHz
        assert answer[-1].decision is Decision.END_OF_TURN
        # A barge-in mid-answer: the server stops the model, the answer ends cancelled.
        outputs = remote.step(second(2), Control(turn_ended=True))
        first = next(o for o in outputs if o.speech is not None)
        remote.interrupt()
        rest = [o.speech for o in outputs if o.speech is not None]
        assert first.speech.response_id == 2
        assert remote._reader.cancelled == [remote._reader.wire_ids[2]]
        assert sum(len(c.audio) for c in rest) < sum(len(c.audio) for c in chunks)
        remote.close()
    qwen.close()


class _Seeing:
    """The tiny Moshi as a model that takes one camera frame a unit (as MiniCPM-o
    does): what the server hands it is recorded; the model itself ignores frames."""

    def __init__(self, inner: MoshiBackend) -> None:
        import dataclasses

        self._inner = inner
        self.spec = dataclasses.replace(inner.spec, frames_per_unit=1)
        self.seen: list[tuple] = []

    def step(self, unit, control):
        self.seen.append(unit.frames)
        return self._inner.step(unit, control)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_camera_frames_reach_a_model_that_takes_them(moshi):
    from app.model.contract import VideoFrame

    seeing = _Seeing(moshi)
    with ServerThread(seeing) as server:
        remote = _client(server.address)
        assert remote.spec.frames_per_unit == 1
        # A smooth picture (JPEG keeps it within a few levels), red left, blue right.
        x = np.linspace(0, 1, 64, dtype=np.float32)
        pixels = np.zeros((48, 64, 3), np.uint8)
        pixels[..., 0] = (255 * (1 - x)).astype(np.uint8)
        pixels[..., 2] = (255 * x).astype(np.uint8)
        units = list(_units(0, 3))
        units[1] = Unit(1, 0.08, 0.08, 16000, units[1].audio,
                        (VideoFrame(pixels=pixels, t=0.1, seq=7),))
        _step_all(remote, units)
        remote.close()
    assert [len(f) for f in seeing.seen] == [0, 1, 0]
    got = seeing.seen[1][0].pixels
    assert got.shape == pixels.shape
    assert np.abs(got.astype(int) - pixels.astype(int)).mean() < 4  # RGB order kept


class _Stalling:
    """The tiny Moshi stuck for `stall_s` once, at unit `at` (a server that stops
    answering mid-conversation, then comes back)."""

    def __init__(self, inner: MoshiBackend, at: int, stall_s: float) -> None:
        self._inner = inner
        self.at, self.stall_s, self.steps = at, stall_s, 0

    def step(self, unit, control):
        self.steps += 1
        if self.steps == self.at + 1:
            time.sleep(self.stall_s)
        return self._inner.step(unit, control)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_a_server_that_stops_answering_mid_conversation_does_not_hang_the_flow(moshi):
    with ServerThread(_Stalling(moshi, at=3, stall_s=3.0)) as server:
        remote = _client(server.address, answer_timeout_s=1.0, retry_s=0.2)
        (session,) = server.server.sessions.values()
        assert len(_speech(_step_all(remote, _units(0, 3)))) == 3
        started = time.monotonic()
        stuck = r"mid-answer \(it did not answer within 1 s\).*recorded up"
        with pytest.raises(BackendError, match=stuck):
            _step_all(remote, _units(3, 1))
        assert time.monotonic() - started < 2.5
        # While it is stuck, each unit comes back at once; once it answers again, the
        # same conversation goes on (resumed, its late answers replayed).
        quick = []
        answered = []
        deadline = time.monotonic() + 20
        index = 4
        while not answered and time.monotonic() < deadline:
            t0 = time.monotonic()
            outs = _step_all(remote, _units(index, 1))
            quick.append(time.monotonic() - t0)
            answered = _speech(outs)
            index += 1
            time.sleep(0.05)
        assert answered, "the conversation did not come back"
        assert max(quick) < 2.5, quick
        assert list(server.server.sessions) == [session.id]  # the same session
        assert remote.notice == ""
        remote.close()


class _Starting:
    """The tiny Moshi, recording the personas the server starts it with."""

    def __init__(self, inner: MoshiBackend) -> None:
        self._inner = inner
        self.started: list[tuple[Persona, bytes]] = []

    def start(self, persona):
        ref = persona.voice.reference_audio
        self.started.append((persona, Path(ref).read_bytes() if ref else b""))
        return self._inner.start(persona)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_a_persona_with_a_voice_recording_reaches_the_served_model(moshi, tmp_path):
    import soundfile

    from app.model.contract import Voice

    wav = tmp_path / "my voice.wav"
    rng = np.random.default_rng(3)
    soundfile.write(wav, (0.1 * rng.standard_normal(3 * 24000)).astype(np.float32), 24000)
    starting = _Starting(moshi)
    with ServerThread(starting) as server:
        remote = RemoteBackend(address=server.address)
        remote.load(ModelSource(), Quant.BF16, lambda *_: None)
        remote.start(Persona("p", "You are a pirate.", voice=Voice(reference_audio=wav)))
        assert len(_speech(_step_all(remote, _units(0, 2)))) == 2
        remote.close()
    persona, data = starting.started[-1]
    assert persona.role_prompt == "You are a pirate."
    assert data == wav.read_bytes()  # the recording itself, byte for byte
