"""One conversation through the real window, and the checks most fault rows share.

`talk()` opens the window over the row's folders, presses Start, waits for the tiny
model to answer the question in the mic file (or for the fault), lets `during` act on
the running conversation, ends it, closes the window, and returns what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.bench.fault_inputs import base_settings, write_settings
from app.bench.fault_recording import RECORDING, ReadBack, folders, read_all
from app.bench.fault_report import Outcome
from app.bench.fault_window import WindowRun
from app.ui.options import LaunchOverrides

ANSWER_TIMEOUT_S = 45.0  # the tiny model on a busy 2-core machine, camera off
SPOKE = "speaking"


def files(ctx: Any, *, mic: Path | str | None = None, camera: Path | str | None = None
          ) -> LaunchOverrides:
    """`duetto --model TINY --mic FILE [--camera FILE] --speaker null` for this row."""
    return LaunchOverrides(
        mic=str(mic if mic is not None else ctx.media.speech_wav),
        camera=None if camera is None else str(camera),
        speaker="null",
        model_dir=ctx.model,
        quant="bf16",
        device="cpu",
    )


@dataclass
class Talk:
    said: list[str] = field(default_factory=list)
    phase: str = ""  # after pressing Start: "running", or "idle" when refused
    answered: bool = False  # the assistant reached "speaking"
    ended: bool = True  # it went back to idle when asked to
    threads_left: list[str] = field(default_factory=list)
    recordings: list[Path] = field(default_factory=list)
    states: list[tuple[float, str, str]] = field(default_factory=list)
    devices: list[tuple[float, str, str, str]] = field(default_factory=list)
    wall_s: float = 0.0  # how long the conversation ran
    said_at: list[str] = field(default_factory=list)  # `said` with when (for the notes)


def talk(
    ctx: Any,
    overrides: LaunchOverrides,
    *,
    settings: dict | bytes | str | None = None,
    wait_answer: bool = True,
    answer_timeout_s: float = ANSWER_TIMEOUT_S,
    settle_s: float = 2.0,
    during: Callable[[WindowRun], None] | None = None,
    loader: Callable[..., Any] | None = None,
    session_builder: Callable[..., Any] | None = None,
) -> Talk:
    """One conversation; settings default to base_settings() unless the row wrote its own.

    Without `wait_answer` (and no `during`) it runs `settle_s` before it is ended."""
    if settings is not None:
        write_settings(ctx.config, settings)
    elif not (ctx.config / "settings.json").exists():
        write_settings(ctx.config, base_settings(ctx.model))
    result = Talk()
    with WindowRun(ctx.home, overrides, loader=loader, session_builder=session_builder) as run:
        result.phase = run.start()
        began = run.now
        if result.phase == "running":
            if wait_answer:
                result.answered = run.wait_state(SPOKE, answer_timeout_s)
            if during is not None:
                during(run)
            elif not wait_answer:
                run.pump(settle_s)  # long enough for a fault at the start to show
            result.answered = result.answered or run.reached(SPOKE)
            result.wall_s = run.now - began
            result.ended = run.stop()
        run.pump(0.3)
    result.said = run.texts()
    result.said_at = [f"{s.at:.1f} s {s}" for s in run.said]
    result.threads_left = run.threads_left
    result.states = run.states
    result.devices = run.devices
    result.recordings = folders(ctx.data / "recordings")
    return result


def judge_common(out: Outcome, done: Talk) -> None:
    """What every window row checks: words shown, the end, threads left behind."""
    out.said = done.said
    out.notes.extend(done.said_at)
    out.check_words()
    if not done.ended:
        out.problem("hang", "the conversation did not end when asked")
    if done.threads_left:
        out.problem("hang", f"threads left after the window closed: "
                            f"{', '.join(sorted(set(done.threads_left)))}")


def judge_recording(out: Outcome, done: Talk, *, min_seconds: float | None = None) -> list[
        ReadBack]:
    """The conversation's recording reads back in wave, sox and libsndfile alike."""
    if not done.recordings:
        out.problem("lost", "no recording was written")
        return []
    wav = done.recordings[-1] / RECORDING
    reads = read_all(wav)
    readable = [r.seconds for r in reads if r.seconds is not None]
    out.kept = "recording " + ", ".join(str(r) for r in reads)
    for r in reads:
        if r.seconds is None and "not installed" not in r.error:
            out.problem("lost", f"the recording is unreadable in {r.reader}: {r.error}")
    if min_seconds is not None and readable and min(readable) < min_seconds:
        out.problem("lost", f"the recording holds {min(readable):.1f} s of a "
                            f"{min_seconds:.1f} s conversation")
    return reads


def judge_answer(out: Outcome, done: Talk, why: str = "") -> None:
    if done.phase != "running":
        out.problem("broken", "the conversation did not start" + (f" ({why})" if why else ""))
    elif not done.answered:
        out.problem("broken", "the assistant never answered" + (f" ({why})" if why else ""))
