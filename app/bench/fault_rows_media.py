"""Fault rows on the files a user gives as microphone and camera (`--mic`, `--camera`).

A file that cannot be used must be named in a clear message, and the window must stay
usable: either the conversation is refused (idle again, nothing half-started) or it
goes on without that input and says so. Audio that is merely unusual (8 kHz, six
channels) must simply work: the assistant answers and the recording holds the voice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.bench.fault_recording import RECORDING, channel_levels
from app.bench.fault_report import Outcome
from app.bench.fault_talk import Talk, files, judge_answer, judge_common, judge_recording, talk

VOICE_DB = -45.0  # the user's channel carries the question above this


def _unusable(ctx: Any, path: Path, *, camera: bool, what: str) -> Outcome:
    out = Outcome()
    overrides = files(ctx, camera=path) if camera else files(ctx, mic=path)
    done = talk(ctx, overrides, wait_answer=False)
    judge_common(out, done)
    device = "camera" if camera else "microphone"
    out.expect_said(path.name, "file", device, what=f"the {device} file ({what})")
    if done.phase == "running":
        out.kept = f"the conversation went on without the {device}"
        if not done.said:
            out.problem("broken", f"the conversation ran on an unusable {device} file")
    elif done.phase == "idle":
        out.kept = "refused before starting; the window stayed usable"
    else:
        out.problem("hang", f"the window was left in phase {done.phase!r}")
    return out


def mic_missing(ctx: Any) -> Outcome:
    return _unusable(ctx, ctx.home / "no-such-recording.wav", camera=False, what="missing")


def mic_not_media(ctx: Any) -> Outcome:
    return _unusable(ctx, ctx.media.mic_not_media, camera=False, what="not audio")


def mic_empty(ctx: Any) -> Outcome:
    return _unusable(ctx, ctx.media.mic_empty, camera=False, what="empty")


def mic_zero_frames(ctx: Any) -> Outcome:
    return _unusable(ctx, ctx.media.mic_zero_frames, camera=False, what="no samples")


def camera_missing(ctx: Any) -> Outcome:
    return _unusable(ctx, ctx.home / "no-such-clip.mp4", camera=True, what="missing")


def camera_not_media(ctx: Any) -> Outcome:
    return _unusable(ctx, ctx.media.camera_not_media, camera=True, what="not video")


def camera_empty(ctx: Any) -> Outcome:
    return _unusable(ctx, ctx.media.camera_empty, camera=True, what="empty")


def camera_zero_frames(ctx: Any) -> Outcome:
    return _unusable(ctx, ctx.media.camera_zero_frames, camera=True, what="no frames")


# ----------------------------------------------------------------------- usable audio
def _voice_kept(out: Outcome, done: Talk) -> None:
    """The recording holds the whole conversation, and the user's voice in it."""
    reads = judge_recording(out, done, min_seconds=max(0.0, done.wall_s - 3.0))
    if not reads or done.phase != "running" or not done.recordings:
        return
    try:
        user_db, _ = channel_levels(done.recordings[-1] / RECORDING)
    except Exception as exc:  # an unreadable file was already reported as lost
        out.notes.append(f"levels not read: {exc}")
        return
    out.kept += f"; user channel {user_db:.0f} dBFS"
    if user_db < VOICE_DB:
        out.problem("lost", f"the user's voice is missing from the recording "
                            f"({user_db:.0f} dBFS)")


def _usable(ctx: Any, path: Path, what: str) -> Outcome:
    out = Outcome()
    done = talk(ctx, files(ctx, mic=path))
    judge_common(out, done)
    judge_answer(out, done, what)
    _voice_kept(out, done)
    return out


def mic_8khz(ctx: Any) -> Outcome:
    return _usable(ctx, ctx.media.speech_8k, "8 kHz speech")


def mic_6ch(ctx: Any) -> Outcome:
    return _usable(ctx, ctx.media.speech_6ch, "6-channel speech")


def _broken_samples(ctx: Any, path: Path, what: str) -> Outcome:
    """NaN or inf in the audio: refused with a message, or cleaned, said, and answered."""
    out = Outcome()
    done = talk(ctx, files(ctx, mic=path))
    judge_common(out, done)
    out.expect_said("nan", "infinite", "not a number", "not numbers", "invalid", "damaged",
                    path.name, what=f"the {what} in the microphone file")
    if done.phase == "running":
        judge_answer(out, done, f"after {what}")
        _voice_kept(out, done)
    else:
        out.kept = "refused before starting; the window stayed usable"
    return out


def mic_nan(ctx: Any) -> Outcome:
    return _broken_samples(ctx, ctx.media.speech_nan, "NaN samples")


def mic_inf(ctx: Any) -> Outcome:
    return _broken_samples(ctx, ctx.media.speech_inf, "infinite samples")
