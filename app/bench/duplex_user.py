"""The scripted user of a duplex scenario, speaking into a VirtualRoom as it runs.

Each line is handed to the room (`room.say()`, heard from the room's next block) at the
moment the script asks for; the room returns where it landed, so the placements are
exact. The same lines, without noise or echo, make the user's clean track for scoring.

Reactive lines listen to what the room's speaker played (`room.played`), as a person
hears the assistant: "on_speech" waits for the assistant's voice, "on_silence" for it to
end. Times are room samples; room sample n is session time n / rate, because the room's
first block anchors the session clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from app.bench.duplex_scenario import Line, Scenario
from app.bench.speech_cache import RATE as SPEECH_RATE
from app.bench.speech_cache import SpeechCache
from app.flow.virtual_room import VirtualRoom

AUDIBLE = 10 ** (-50 / 20)  # a speaker block louder than this (peak) is the assistant talking
RUN_MERGE = 0.5  # silences shorter than this do not end the assistant's speech (seconds)
POLL = 0.005


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return np.asarray(audio, dtype=np.float32)
    g = gcd(src, dst)
    return resample_poly(audio, dst // g, src // g).astype(np.float32)


@dataclass
class Placement:
    index: int  # line number in the script (repeats count on)
    line: Line
    start: int  # room samples
    end: int
    timed_out: bool

    def as_task(self, rate: int) -> dict:
        return {"index": self.index, "text": self.line.text, "expect": self.line.expect,
                "trigger": self.line.trigger, "start": round(self.start / rate, 6),
                "end": round(self.end / rate, 6), "timed_out": self.timed_out}


class _Runs:
    """The assistant's speech as heard so far: runs of audible blocks, short gaps merged."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.runs: list[list[int]] = []  # [start, end) in room samples
        self.seen = 0  # blocks of room.played examined
        self.position = 0

    def update(self, room: VirtualRoom) -> None:
        blocks, count = room.played_since(self.seen)  # the room keeps a bounded history
        for block in blocks:
            n = len(block)
            if n and float(np.max(np.abs(block))) > AUDIBLE:
                if self.runs and self.position - self.runs[-1][1] < RUN_MERGE * self.rate:
                    self.runs[-1][1] = self.position + n
                else:
                    self.runs.append([self.position, self.position + n])
            self.position += n
        self.seen = count

    def speaking_after(self, t: int) -> list[int] | None:
        """The run in progress at `t`, or the first one starting after it."""
        return next((r for r in self.runs if r[1] > t), None)

    def started_since(self, t: int) -> bool:
        return any(r[0] >= t for r in self.runs)

    @property
    def last_end(self) -> int:
        return self.runs[-1][1] if self.runs else 0


class ScriptedUser:
    """Speaks the scenario's lines into a room with `room.say()`; run() on its own thread."""

    def __init__(self, scenario: Scenario, speech: SpeechCache, rate: int) -> None:
        self.scenario = scenario
        self.rate = rate
        self.audio = {
            line: resample(speech.speak(line.text, line.voice), SPEECH_RATE, rate)
            * np.float32(10 ** (line.gain_db / 20))
            for line in scenario.lines
        }
        self.placements: list[Placement] = []
        self.note = ""
        self._stop = threading.Event()

    def longest_seconds(self) -> float:
        """How long the scenario can last when every reactive line waits its timeout."""
        s = self.scenario
        longest = max(len(a) for a in self.audio.values()) / self.rate
        if s.repeat_until is not None:
            return s.repeat_until + longest + max(ln.timeout for ln in s.lines) + s.max_tail
        total = 0.0
        for line in s.lines:
            wait = line.timeout if line.reactive else line.value
            total = max(total, line.value) if line.trigger == "at" else total + wait
            total += len(self.audio[line]) / self.rate
        return total + s.max_tail

    def _cycle(self) -> Iterator[Line]:
        """The lines in speaking order; a repeated scenario cycles all but the opener."""
        lines = self.scenario.lines
        yield from lines
        if self.scenario.repeat_until is None:
            return
        body = lines[1:] or lines
        while True:
            yield from body

    def stop(self) -> None:
        self._stop.set()

    def clean_track(self, length: int) -> np.ndarray:
        """The user's voice alone, where it was spoken: `length` room samples."""
        clean = np.zeros(length, dtype=np.float32)
        for p in self.placements:
            part = self.audio[p.line][: max(0, length - p.start)]
            clean[p.start : p.start + len(part)] += part
        return clean

    def run(self, room: VirtualRoom) -> None:
        """Speak the script into the room as it runs, then wait out the tail."""
        runs = _Runs(self.rate)
        prev_start = prev_end = 0
        limit = self.scenario.repeat_until

        def position() -> int:
            return round(room.now * self.rate)

        for index, line in enumerate(self._cycle()):
            if limit is not None and index > 0 and prev_end / self.rate >= limit:
                break
            voice = self.audio[line]
            deadline = prev_end + round(line.timeout * self.rate)
            target: int | None = None
            timed_out = False
            while True:
                if self._stop.is_set() or room.wait_done(0):
                    self.note = "the room stopped before the script ended"
                    return
                runs.update(room)
                now = position()
                if target is None:
                    target = self._target(line, runs, prev_start, prev_end, now)
                    if target is None and now >= deadline:
                        target, timed_out = now, True
                # room.say() starts at the next block: call it once that block is due.
                if target is not None and now + room.block >= target:
                    break
                time.sleep(POLL)
            start = round(room.say(voice, self.rate) * self.rate)
            end = start + len(voice)
            self.placements.append(Placement(index, line, start, end, timed_out))
            prev_start, prev_end = start, end
        last = self.placements[-1].line if self.placements else None
        answer_due = last is not None and last.expect in ("respond", "interrupt")
        self._wait_tail(room, runs, prev_start, prev_end, answer_due)

    def _target(self, line: Line, runs: _Runs, prev_start: int, prev_end: int,
                now: int) -> int | None:
        rate = self.rate
        if line.trigger == "at":
            return round(line.value * rate)
        if line.trigger == "gap":
            return prev_end + round(line.value * rate)
        if now < prev_end:
            return None  # the previous line is still being spoken
        if line.trigger == "on_speech":
            run = runs.speaking_after(prev_end)
            return None if run is None else run[0] + round(line.value * rate)
        # on_silence: the assistant spoke since the previous line began and then stopped.
        quiet_for = now - runs.last_end
        if runs.started_since(prev_start) and quiet_for >= line.value * rate:
            return runs.last_end + round(line.value * rate)
        return None

    def _wait_tail(self, room: VirtualRoom, runs: _Runs, last_start: int, last_end: int,
                   answer_due: bool) -> None:
        """Wait until the assistant is quiet for `tail` seconds after the last line (after
        answering it, when the line asks for an answer), or `max_tail` has passed."""
        s = self.scenario
        while not self._stop.is_set() and not room.wait_done(0):
            runs.update(room)
            now = round(room.now * self.rate)
            quiet = now - max(runs.last_end, last_end)
            answered = not answer_due or runs.started_since(last_start)
            if now >= last_end + s.max_tail * self.rate:
                return
            if answered and quiet >= s.tail * self.rate:
                return
            time.sleep(POLL)
