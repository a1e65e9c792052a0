"""The end-of-turn model's calls: on a thread of their own where the cores allow.

A call takes 0.1-0.2 s on a 2-core CPU. Made on the listener, it holds up everything the
listener does meanwhile: voice activity (a user who speaks again is heard that much
later), echo cancellation, the recording. With cores to spare the listener hands the
request (the turn's audio, already cut, and which pause it is about) to a thread of its
own and carries on; each tick it collects what has been decided and gives it to the
controller, which ignores a verdict for a pause that is over (duplex.py).

With fewer than `OWN_THREAD_MIN_CORES` cores the call stays on the listener. The answer
is prepared during the same pause, and on a 2-core machine a third busy thread slowed
everything: with the call on its own thread the tiny model's first chunk took 0.29-0.54 s
instead of 0.22-0.25 s and the call itself 0.24-0.44 s instead of 0.14-0.18 s (one
`bench duplex` run each, 4 scenarios). The listener catches up after the call; a verdict
made there counts as decided when the call returned (`JudgedPause.decided`).

Only the newest request matters: one still waiting when a newer one comes is dropped
(the pause it was about has ended). The event log gets every verdict (`turn_judged`,
with when it was asked), and a model that fails is reported once.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from dataclasses import dataclass

import numpy as np

from app.flow.burst_kind import LEAD as BURST_LEAD
from app.flow.burst_kind import BurstKind
from app.flow.events import EventHub, EventKind
from app.flow.turn_end import TurnJudge, TurnVerdict
from app.flow.turn_features import RATE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgedPause:
    """A verdict, or None where the model is missing or failed, on one pause."""

    pause: float  # session time where the user's speech ended
    asked: float  # session time of the request
    verdict: TurnVerdict | None
    # Made on the listener, which stood still meanwhile: the session time at which the
    # verdict really existed. Made on the judge's own thread: None (the collecting tick's
    # time is when it arrived).
    decided: float | None = None


OWN_THREAD_MIN_CORES = 4


def own_thread(cpu_count: int | None = None) -> bool:
    """Whether the model's calls get a thread of their own on this machine."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return cores >= OWN_THREAD_MIN_CORES


class TurnJudging:
    """Asks the end-of-turn model, on a thread of its own or at once; the listener
    collects. `threaded` defaults to what this machine's cores allow (`own_thread`)."""

    def __init__(self, judge: TurnJudge, events: EventHub, cap_seconds: float, *,
                 threaded: bool | None = None, burst_kind: BurstKind | None = None) -> None:
        self.judge = judge
        self.burst_kind = burst_kind  # the word classifier for short utterances, if any
        self._events = events
        self._cap = cap_seconds  # the silence that ends a turn without the model
        self._threaded = own_thread() if threaded is None else threaded
        self._cond = threading.Condition()
        self._request: tuple[float, float, np.ndarray] | None = None
        self._busy = False
        self._done: collections.deque[JudgedPause] = collections.deque()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self.judge.detector is not None

    def ask(self, turn_start: float | None, pause: float, silence: float, now: float) -> None:
        """Judge the turn that began at `turn_start`, in the pause that began at `pause`,
        as if that pause were `silence` long (turn_end.TurnJudge.audio_for)."""
        if not self.available:
            self._done.append(JudgedPause(pause, now, None))
            return
        audio = self.judge.audio_for(turn_start, pause, silence)
        if not self._threaded:
            verdict = self.judge.judge_audio(audio)
            took = verdict.seconds if verdict is not None else 0.0
            self._done.append(JudgedPause(pause, now, verdict, decided=now + took))
            return
        with self._cond:
            if self._closed:
                return
            self._request = (pause, now, audio)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="turn-judge",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def judge_burst(self, burst_start: float | None, now: float) -> bool:
        """Whether the short utterance that began at `burst_start` and just ended asked
        for the floor (burst_kind.py), judged at once on the caller's thread: playback
        is paused meanwhile, and the call (about 0.1 s) decides whether it resumes. A
        classifier that fails is dropped, and the utterance counts as a backchannel."""
        if self.burst_kind is None:
            return False
        audio = self.judge.audio.since((burst_start if burst_start is not None else now)
                                       - BURST_LEAD)
        try:
            verdict = self.burst_kind.judge(audio)
        except Exception:
            log.exception("the word classifier failed; short utterances are judged by "
                          "their length from now on")
            self.burst_kind = None
            return False
        self._events.emit(EventKind.BURST_JUDGED, now,
                          floor_probability=verdict.floor_probability,
                          wants_floor=verdict.wants_floor, seconds=verdict.seconds,
                          audio_seconds=len(audio) / RATE)
        return verdict.wants_floor

    def collect(self, now: float) -> list[JudgedPause]:
        """The verdicts decided since the last call, each logged as `turn_judged` when it
        was decided (`now` for one made on the judge's own thread)."""
        out: list[JudgedPause] = []
        while self._done:
            judged = self._done.popleft()
            out.append(judged)
            self._log(judged, now if judged.decided is None else judged.decided)
        return out

    def wait(self, timeout: float = 5.0) -> bool:
        """Block until no request is waiting or running (tests); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._request is None and not self._busy,
                                       timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._request = None
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._request is not None or self._closed)
                if self._closed:
                    return
                pause, asked, audio = self._request
                self._request = None
                self._busy = True
                self._cond.notify_all()  # whoever waits on the request's fate
            try:
                verdict = self.judge.judge_audio(audio)  # never raises (turn_end.py)
                self._done.append(JudgedPause(pause, asked, verdict))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _log(self, judged: JudgedPause, now: float) -> None:
        verdict = judged.verdict
        if verdict is not None:
            self._events.emit(
                EventKind.TURN_JUDGED, now,
                probability=verdict.probability, complete=verdict.complete,
                seconds=verdict.seconds, audio_seconds=verdict.audio_seconds,
                asked=judged.asked, silence=judged.asked - judged.pause,
            )
        elif self.judge.failure is not None:  # once: the judge has dropped the model
            self._events.emit(
                EventKind.ERROR, now,
                message=f"{self.judge.failure}; the conversation goes on, and turns end "
                        f"after {self._cap:.1f} s of silence",
            )
            self.judge.failure = None
