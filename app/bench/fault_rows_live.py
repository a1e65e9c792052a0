"""Fault rows in the middle of a conversation: devices that go and come back, a model
that stalls, and a recording folder that cannot be written.

The conversation runs in the real window on the tiny model. Devices are the virtual
microphone and camera (virtual_devices.py) put where PortAudio and OpenCV would be; the
stall wraps the loaded backend so that one answer stops for 5 s after its first speech.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import soundfile

from app.bench.fault_disk import file_size_limit, read_only_folder
from app.bench.fault_inputs import base_settings
from app.bench.fault_recording import RECORDING
from app.bench.fault_report import Outcome
from app.bench.fault_talk import (
    ANSWER_TIMEOUT_S,
    files,
    judge_answer,
    judge_common,
    judge_recording,
    talk,
)
from app.bench.fault_window import WindowRun
from app.bench.virtual_devices import VirtualCamera, VirtualSoundCard, installed
from app.ui.options import LaunchOverrides

AWAY_S = 4.0  # how long a device stays unplugged
BACK_WORDS = ("back", "reconnected", "restored", "again", "returned")


def _devices_overrides(ctx: Any, *, mic_file: bool) -> LaunchOverrides:
    """Devices from the settings (the default microphone, camera 0) unless a mic file."""
    return LaunchOverrides(mic=str(ctx.media.speech_wav) if mic_file else None,
                           speaker="null", model_dir=ctx.model, quant="bf16", device="cpu")


def _said_after(run: WindowRun, at: float, words: tuple[str, ...]) -> bool:
    return any(s.at >= at and any(w in s.text.lower() for w in words) for s in run.said)


def mic_drops_and_returns(ctx: Any) -> Outcome:
    out = Outcome()
    voice, rate = soundfile.read(str(ctx.media.speech_wav), dtype="float32")
    card = VirtualSoundCard(voice, rate)
    marks: dict[str, Any] = {}

    def during(run: WindowRun) -> None:
        run.pump(2.0)  # the user has begun to ask
        marks["unplugged"] = run.now
        card.unplug()
        marks["told_lost"] = run.wait(
            lambda: _said_after(run, marks["unplugged"], ("microphone",)), 6.0)
        run.pump(max(0.0, marks["unplugged"] + AWAY_S - run.now))
        marks["plugged"] = run.now
        card.plug_in()  # the user speaks again into the returned microphone
        marks["told_back"] = run.wait(
            lambda: _said_after(run, marks["plugged"], BACK_WORDS), 10.0)
        marks["answered_after"] = run.wait_state("speaking", 45.0, after=marks["plugged"])

    with installed(card=card):
        done = talk(ctx, _devices_overrides(ctx, mic_file=False), during=during,
                    wait_answer=False)
    judge_common(out, done)
    if done.phase != "running":
        out.problem("broken", "the conversation did not start on the microphone")
    if marks and not marks["told_lost"]:
        out.problem("silent", "nothing said the microphone was lost")
    if marks and not marks["told_back"]:
        out.problem("silent", "nothing said the microphone is back")
    if marks and not marks["answered_after"]:
        out.problem("broken", "no answer to the question asked after the microphone "
                              "came back")
    judge_recording(out, done, min_seconds=max(0.0, done.wall_s - 3.0))
    out.kept += f"; conversation {done.wall_s:.0f} s"
    return out


def camera_drops_and_returns(ctx: Any) -> Outcome:
    out = Outcome()
    cam = VirtualCamera()
    marks: dict[str, Any] = {}
    settings = base_settings(ctx.model)
    settings["devices"] = {"camera": "0", "camera_on": True, "speaker": "null"}

    def during(run: WindowRun) -> None:
        bridge = run.window.bridge
        marks["first_frames"] = run.wait(lambda: bridge.frames_seen > 0, 15.0)
        marks["unplugged"] = run.now
        cam.unplug()
        marks["told_lost"] = run.wait(
            lambda: _said_after(run, marks["unplugged"], ("camera",)), 8.0)
        run.pump(max(0.0, marks["unplugged"] + AWAY_S - run.now))
        seen = bridge.frames_seen
        marks["plugged"] = run.now
        cam.plug_in()
        marks["frames_back"] = run.wait(lambda: bridge.frames_seen > seen + 3, 15.0)
        marks["told_back"] = run.wait(
            lambda: _said_after(run, marks["plugged"], BACK_WORDS), 2.0)
        run.pump(0.5)
        marks["shown_on"] = bool(run.window.camera_on)

    with installed(camera=cam):
        done = talk(ctx, _devices_overrides(ctx, mic_file=True), settings=settings,
                    wait_answer=False, during=during)
    judge_common(out, done)
    if done.phase != "running":
        out.problem("broken", "the conversation did not start with the camera")
    elif not marks.get("first_frames"):
        out.problem("broken", "no picture reached the window before the unplug")
    else:
        if not marks["told_lost"]:
            out.problem("silent", "nothing said the camera was lost")
        if not marks["frames_back"]:
            out.problem("broken", "no picture after the camera was plugged back in")
        if not marks["told_back"]:
            out.problem("silent", "nothing said the camera is back")
        if not marks["shown_on"]:
            out.problem("broken", "the window still shows the camera as off")
    judge_recording(out, done, min_seconds=max(0.0, done.wall_s - 3.0))
    out.kept += f"; camera opened {cam.opened}x"
    return out


# ----------------------------------------------------------------------- a stalled model
STALL_S = 5.0


class StallingBackend:
    """The real loaded backend, except that one answer stops after its first speech
    chunk (a GPU driver hiccup, another program taking the GPU). It stops for as long
    as that chunk plays plus STALL_S, so the user hears STALL_S of silence mid-answer
    whatever the chunk's length. Everything else is the backend's own."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.stalled_at: float | None = None
        self.resumed_at: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def step(self, unit: Any, control: Any) -> Any:
        outputs = self._backend.step(unit, control)
        if self.stalled_at is not None:
            return outputs
        return self._stall_in(outputs)

    def _stall_in(self, outputs: Any) -> Any:
        for out in outputs:
            yield out
            speech = out.speech
            if speech is not None and self.stalled_at is None:
                self.stalled_at = time.monotonic()
                time.sleep(len(speech.audio) / speech.sample_rate + STALL_S)
                self.resumed_at = time.monotonic()


def backend_stall(ctx: Any) -> Outcome:
    from app.flow.conversation import load_backend

    out = Outcome()
    made: list[StallingBackend] = []

    def loader(options: Any, progress: Any) -> StallingBackend:
        made.append(StallingBackend(load_backend(options, progress)))
        return made[-1]

    marks: dict[str, Any] = {}

    def during(run: WindowRun) -> None:
        stall = made[-1]
        run.wait(lambda: stall.stalled_at is not None, ANSWER_TIMEOUT_S)
        if stall.stalled_at is None:
            return
        marks["stalled"] = run.now
        run.wait(lambda: stall.resumed_at is not None, STALL_S + 30.0)
        marks["told"] = any(marks["stalled"] <= s.at <= run.now + 0.5 for s in run.said)
        marks["resumed"] = run.now
        marks["finished"] = run.wait(
            lambda: any(at > marks["resumed"] and state == "listening"
                        for at, state, _ in run.states), 30.0)

    # The stall comes with the answer's first chunk, maybe before it is heard: `during`
    # watches from the start.
    done = talk(ctx, files(ctx), loader=loader, during=during, wait_answer=False)
    judge_common(out, done)
    out.notes.append(f"marks (s since the window opened): {marks}")
    judge_answer(out, done, "before the stall")
    if not marks:
        out.problem("broken", "the model never reached the stall (no speech)")
    else:
        if not marks["told"]:
            out.problem("silent", f"nothing told the user during the {STALL_S:.0f} s stall")
        if not marks["finished"]:
            out.problem("hang", "the answer did not finish after the model came back")
    judge_recording(out, done, min_seconds=max(0.0, done.wall_s - 3.0))
    return out


# ----------------------------------------------------------------------- the disk
def recordings_read_only(ctx: Any) -> Outcome:
    out = Outcome()
    folder = ctx.home / "recordings-read-only"
    settings = base_settings(ctx.model)
    settings["conversation"] = {"record": True, "record_dir": str(folder)}
    with read_only_folder(folder) as how:
        if how is None:
            out.problem("broken", "this machine offers no way to make a read-only folder "
                                  "(not tested)")
            return out
        done = talk(ctx, files(ctx), settings=settings, wait_answer=False, settle_s=3.0)
        written = [p for p in folder.rglob("*") if p.is_file()]
    judge_common(out, done)
    out.expect_said("record", "recording", "recordings",
                    what="the recording that cannot be written")
    if done.phase != "running":
        out.problem("broken", "no conversation with the recordings folder read-only")
    out.kept = f"folder made read-only by {how}; {len(written)} files written into it"
    return out


DISK_ROOM_BYTES = 150_000  # room left on the "disk" past the recording's size: about 1.5 s


def disk_full(ctx: Any) -> Outcome:
    out = Outcome()
    marks: dict[str, Any] = {}
    limit = contextlib.ExitStack()

    def during(run: WindowRun) -> None:
        def recorded() -> list:
            wavs = sorted((ctx.data / "recordings").rglob(RECORDING))
            return wavs if wavs and wavs[-1].stat().st_size > 44 + 2 * 96_000 else []

        run.wait(lambda: bool(recorded()), 15.0)  # two seconds on disk
        wavs = recorded()
        if not wavs:
            return
        size = wavs[-1].stat().st_size
        marks["wav"] = wavs[-1]
        marks["full_at_s"] = max(0.0, (size - 44) / 96_000)  # 24 kHz stereo 16-bit
        marks["full"] = run.now
        limit.enter_context(file_size_limit(size + DISK_ROOM_BYTES))
        marks["told"] = run.wait(
            lambda: _said_after(run, marks["full"], ("record", "disk", "space", "full")),
            10.0)
        run.pump(3.0)  # the conversation carries on past the full disk
        marks["running"] = run.phase == "running"

    with limit:
        done = talk(ctx, files(ctx), during=during, wait_answer=False)
    judge_common(out, done)
    if "wav" not in marks:
        out.problem("lost", "no recording was being written before the disk filled")
        return out
    if not marks["told"]:
        out.problem("silent", "nothing said the recording stopped on a full disk")
    if not marks["running"]:
        out.problem("broken", "the conversation ended when the disk filled")
    reads = judge_recording(out, done, min_seconds=marks["full_at_s"])
    out.kept = (out.kept + f"; {marks['full_at_s']:.1f} s were on disk when it filled"
                if reads else out.kept)
    return out
