"""Whether this machine keeps up with the model, said once per conversation in words.

Three signs: how long after the end of the user's turn the answer starts (over 2 s, a
conversation stalls; judged from the second answer, as the first pays for warming up),
the real-time factor of the assistant's speech (seconds of compute per second
of speech, from the session's metrics after each answer; above 1 the voice comes in
pieces), and how long the model takes to take in one unit of conversation while it
listens (longer than the unit lasts, and it falls further behind with every unit). How
far a unit waited is no sign: while a turn-based model answers, the units heard meanwhile
wait for the answer to be written, however fast the machine. On a 2-core CPU the
self-check showed an orange "17.12×" with no word on what it meant. No Qt here.
"""

from __future__ import annotations

import statistics
from collections import deque

from app.ui import messages
from app.ui.messages import UserMessage

# Above this the voice cannot be continuous. The factor is judged from the second answer
# on (it covers all answers so far): the first one pays for warming up (34 s per second
# of speech against 7.8 s over the next answers, tiny model on a busy 2-core machine).
SLOW_RTF = 1.5
RTF_REPORTS_BEFORE_JUDGING = 1
# The answer starts this long after the user stopped talking, median of the answers so
# far (from the second): past it the user wonders whether they were heard.
SLOW_ANSWER_S = 2.0
ANSWERS_BEFORE_JUDGING = 1
# Taking in a unit takes longer than the unit lasts, over the last few units.
SLOW_UNIT_RATIO = 1.0
UNITS_SEEN = 5


class SlownessWatch:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new conversation: it may warn again."""
        self.warned = False
        self._rtf_reports = 0
        self._ratios: deque[float] = deque(maxlen=UNITS_SEEN)
        self._answers_seen = 0
        self._answer_delays: list[float] = []

    def on_latency(self, kind: str, seconds: float) -> UserMessage | None:
        """A latency the session measured; `turn_taking` is the end of the user's turn to
        the answer's first sound (session metrics)."""
        if kind != "turn_taking":
            return None
        self._answers_seen += 1
        if self._answers_seen <= ANSWERS_BEFORE_JUDGING:
            return None
        self._answer_delays.append(seconds)
        delay = statistics.median(self._answer_delays)
        return self._warn(messages.answers_late(delay)) if delay > SLOW_ANSWER_S else None

    def on_rtf(self, rtf: float) -> UserMessage | None:
        self._rtf_reports += 1
        if self._rtf_reports <= RTF_REPORTS_BEFORE_JUDGING or rtf < SLOW_RTF:
            return None
        return self._warn(messages.too_slow(rtf))

    def on_unit(self, compute_s: float, unit_s: float) -> UserMessage | None:
        """One unit taken in while listening: `compute_s` spent on `unit_s` of talk."""
        if unit_s <= 0:
            return None
        self._ratios.append(compute_s / unit_s)
        if len(self._ratios) < UNITS_SEEN:
            return None
        ratio = statistics.median(self._ratios)
        return self._warn(messages.falling_behind(ratio)) if ratio > SLOW_UNIT_RATIO else None

    def _warn(self, message: UserMessage) -> UserMessage | None:
        if self.warned:
            return None
        self.warned = True
        return message
