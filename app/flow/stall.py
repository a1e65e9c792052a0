"""Noticing a model that stops in the middle of an answer, and saying so.

A GPU driver hiccup, another program taking the GPU, or a machine that is simply too
busy can hold the model up for seconds. The user then hears the assistant stop
mid-sentence (or never start) with nothing on screen to explain it. The session tells
this watch, every tick, whether an answer is due (the user's turn ended, or an answer
is on the air and unfinished) and whether the speaker played any of it since the last
tick; once an answer has been due for `after_s` with nothing played, the watch says
"stalled" (once), and "resumed" when sound comes again (even if the model has finished
the answer by then). An answer interrupted meanwhile just clears it.
"""

from __future__ import annotations

STALLED = "stalled"  # also the NOTICE event's `what`
RESUMED = "resumed"


class StallWatch:
    def __init__(self, after_s: float = 3.0) -> None:
        self.after_s = after_s
        self._since: float | None = None  # when the speaker ran dry mid-answer
        self._reported = False
        self.stalls = 0

    def update(self, now: float, due: bool, played: bool) -> str | None:
        """`due`: an answer is awaited or under way and unfinished; `played`: the
        speaker played some of it since the last call. Returns STALLED or RESUMED when
        that news is due, else None."""
        if due and not played:
            if self._since is None:
                self._since = now
            if not self._reported and now - self._since >= self.after_s:
                self._reported = True
                self.stalls += 1
                return STALLED
            return None
        self._since = None
        if not self._reported:
            return None
        self._reported = False
        return RESUMED if played else None  # else it ended unheard (a barge-in)
