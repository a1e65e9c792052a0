"""Camera frames on the appends that close the model's units, as vLLM-Omni's MiniCPM-o
binds them (app/model/remote/frames.py).

The appends are the remote backend's own, sent to `duetto serve` (tiny Qwen2.5-Omni,
which takes frames) and recorded there; they are then fed to vLLM-Omni 0.30.0's own
MiniCPM-o append buffer (its server side, installed without its engine), which builds
the model's units and gives each the frame it pairs with it. Each unit must get the
picture taken during it, also when the session's units are not all one model unit long
(a short one at a turn's end): a frame on every append instead drifts a unit further
behind with each short one.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
import tiny_models
import vllm_omni_bare
from duplex_server import ServerThread

from app.model.contract import Control, ModelSource, Persona, Unit, VideoFrame
from app.model.remote.backend import RemoteBackend
from app.model.remote.frames import FrameSchedule
from app.serve.served import ServedSession

qwen_tiny_factory = tiny_models.qwen_tiny_factory

pytestmark = pytest.mark.slow

PERSONA = Persona("test", "Answer briefly.")

def _minicpmo_append_buffer():
    """vLLM-Omni's MiniCPMO45PcmAppendBuffer and its realtime append decoding."""
    vllm_omni_bare.packages("engine.duplex", "model_executor.models.minicpmo_4_5.duplex")
    from vllm_omni.model_executor.models.minicpmo_4_5.duplex.input import (
        MiniCPMO45PcmAppendBuffer,
    )
    from vllm_omni.protocol.realtime.audio_input import decode_audio_append
    from vllm_omni.protocol.realtime.session import RealtimeInputDefaults

    return MiniCPMO45PcmAppendBuffer, decode_audio_append, RealtimeInputDefaults


def _frame(level: int, t: float) -> VideoFrame:
    return VideoFrame(np.full((48, 64, 3), level, np.uint8), t, level)


def _level(jpeg_b64: str) -> int:
    data = np.frombuffer(base64.b64decode(jpeg_b64), np.uint8)
    return round(float(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).mean()))


# The session's units, in ms: whole model units, and short ones where a turn ended.
UNITS_MS = [1000, 1000, 600, 1000, 1000, 400, 1000, 1000, 700, 1000, 1000, 1000]


def test_frames_ride_the_appends_that_close_vllm_omnis_minicpmo_units(
        qwen_tiny_factory, monkeypatch):
    buffer_class, decode_append, defaults = _minicpmo_append_buffer()
    appends: list[dict] = []
    real_append = ServedSession.append

    async def recording_append(self, event):  # the server's own handler still runs
        appends.append(dict(event))
        await real_append(self, event)

    monkeypatch.setattr(ServedSession, "append", recording_append)
    served = tiny_models.loaded_backend(qwen_tiny_factory())
    taken_at: dict[int, float] = {}  # frame level -> when it was taken (s)
    with ServerThread(served) as server:
        remote = RemoteBackend(address=server.address)
        remote.load(ModelSource(), None, lambda *_: None)
        assert remote.spec.frames_per_unit == 1 and remote.spec.unit_ms == 1000
        remote.start(PERSONA)
        start = 0.0
        for index, ms in enumerate(UNITS_MS):
            level = 10 + 20 * index
            end = start + ms / 1000
            taken_at[level] = end - 0.05  # the unit's newest frame, just before its end
            audio = np.zeros(ms * 16, np.float32)
            unit = Unit(index, start, ms / 1000, 16000, audio, (_frame(level, end - 0.05),))
            list(remote.step(unit, Control()))
            start = end
        remote.close()
    assert len(appends) == len(UNITS_MS)

    # vLLM-Omni's server side: each append decoded as its realtime layer does, then its
    # MiniCPM-o buffer builds 1000 ms units and binds the queued frames to them.
    buffer = buffer_class()
    bound: list[tuple[int, int | None]] = []  # (model unit, frame level)
    for n, event in enumerate(appends):
        decoded = decode_append(event, defaults=defaults())
        payload = {"type": "audio", "audio": base64.b64encode(decoded.audio).decode(),
                   "format": decoded.format, "sample_rate_hz": decoded.sample_rate_hz,
                   "video_frames": list(decoded.video_frames)}
        reservation = buffer.prepare_append(payload, operation_id=f"op{n}",
                                            chunk_period_ms=1000)
        if reservation is not None and reservation.payload.get("audio"):
            frames = reservation.payload.get("video_frames") or []
            bound.append((len(bound), _level(frames[0]) if frames else None))
    assert len(bound) == int(sum(UNITS_MS) // 1000)
    for unit, level in bound:
        assert level is not None, bound  # every model unit sees the camera
        # Taken during the model unit it is bound to, or in the short unit that
        # closed it (whose audio it was sent with): never a whole unit away.
        assert unit - 0.1 < taken_at[level] < unit + 1.0 + 0.7, (unit, level, bound)


def test_the_schedule_follows_the_first_unit_a_server_states():
    schedule = FrameSchedule(1000, first_unit_ms=1030)  # vLLM-Omni before 0.30.0
    ends = [1000, 2000, 3000, 4000]
    assert [schedule.closes_unit(ms) for ms in ends] == [False, True, True, True]
    schedule = FrameSchedule(1000)  # 0.30.0: every 1000 ms, the first one included
    assert [schedule.closes_unit(ms) for ms in ends] == [True, True, True, True]
    schedule = FrameSchedule(1000)
    assert [schedule.closes_unit(ms) for ms in [600, 1200, 1800, 3500]] == [
        False, True, False, True]
