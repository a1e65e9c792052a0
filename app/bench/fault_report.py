"""What one fault row found, how it is judged, and the table people read.

A row reports what the user was told (`said`: the window's messages, the session's
device and error events, a process's stderr), what was kept (`kept`: recording seconds
read back, settings, personas) and the `problems` it saw, each starting with its kind:

* crash: an exception escaped (to Qt, a thread, or the process died);
* hang: the row outran its time, or a thread was left behind after the window closed;
* lost: something the user owned or recorded is gone or unreadable;
* silent: the fault happened and nobody told the user;
* cryptic: what the user was told names an exception class or shows a traceback;
* broken: the app did not do what it should still do (answer, record, start again).

A row passes when it saw no problem. Nothing here imports Qt or torch.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("crash", "hang", "lost", "silent", "cryptic", "broken")

# An exception's class name or a traceback in what a user reads: "PortAudioError",
# "OSError", "UnicodeDecodeError", "[Errno 30]", "Traceback (most recent call last)".
_CRYPTIC = re.compile(
    r"\b[A-Z][A-Za-z0-9_]*(?:Error|Exception|Interrupt)\b|\[Errno -?\d+\]|Traceback \("
)


def cryptic_part(text: str) -> str | None:
    """The part of a user-facing text that only a programmer reads, or None."""
    match = _CRYPTIC.search(text)
    return match.group(0) if match else None


@dataclass
class Outcome:
    """What a row saw. `problems` entries read "kind: what" (kind from KINDS)."""

    said: list[str] = field(default_factory=list)
    kept: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # detail for the JSON, not the table

    def problem(self, kind: str, what: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        self.problems.append(f"{kind}: {what}")

    def check_words(self) -> None:
        """Flag every message that shows an exception name or a traceback."""
        for text in self.said:
            part = cryptic_part(text)
            if part is not None:
                self.problem("cryptic", f"{part!r} shown to the user")

    def expect_said(self, *words: str, what: str = "the fault") -> bool:
        """A message holding any of `words` as a whole word or phrase (any case) was
        shown; else silent. The "level: " in front of each message does not count (an
        "info:" is no word about "inf")."""
        patterns = [re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", re.IGNORECASE)
                    for w in words]
        texts = [text.split(": ", 1)[-1] for text in self.said]
        found = any(p.search(text) for text in texts for p in patterns)
        if not found:
            self.problem("silent", f"nothing told the user about {what}")
        return found


@dataclass
class RowResult:
    name: str
    group: str
    verdict: str  # "pass", or the kind of the first problem
    seconds: float
    said: list[str]
    kept: str
    problems: list[str]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, group: str, outcome: Outcome, seconds: float) -> RowResult:
        verdict = "pass"
        if outcome.problems:
            verdict = outcome.problems[0].split(":", 1)[0]
        return cls(name, group, verdict, round(seconds, 1), outcome.said, outcome.kept,
                   outcome.problems, outcome.notes)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cell(texts: list[str], width: int, limit: int = 3) -> list[str]:
    """Messages wrapped to `width`; at most `limit` messages, the rest counted."""
    if not texts:
        return ["(nothing)"]
    lines: list[str] = []
    for text in texts[:limit]:
        wrapped = textwrap.wrap(" ".join(text.split()), width - 2) or [""]
        lines.append("- " + wrapped[0])
        lines.extend("  " + more for more in wrapped[1:3])
        if len(wrapped) > 3:
            lines[-1] = lines[-1][: width - 1] + "…"
    if len(texts) > limit:
        lines.append(f"  (+{len(texts) - limit} more)")
    return lines


def table(results: list[RowResult], widths: tuple[int, int, int, int] = (24, 58, 30, 30)
          ) -> str:
    """Fault | what the window or log said | what was kept | verdict, wrapped to fit."""
    w_name, w_said, w_kept, w_verdict = widths
    head = (f"{'fault':<{w_name}} | {'what the window or log said':<{w_said}} | "
            f"{'kept':<{w_kept}} | verdict")
    lines = [head, "-" * (len(head) + w_verdict - len("verdict"))]
    for r in results:
        said = _cell(r.said, w_said)
        kept = textwrap.wrap(r.kept or "-", w_kept) or ["-"]
        verdict = ["PASS"] if r.passed else []
        for problem in r.problems:
            wrapped = textwrap.wrap(problem, w_verdict - 2)
            verdict.extend(["FAIL " + wrapped[0] if not verdict else "  " + wrapped[0]]
                           + ["  " + more for more in wrapped[1:]])
        name = [r.name, f"({r.seconds:.0f} s)"]
        for i in range(max(len(said), len(kept), len(verdict), len(name))):
            cells = (
                name[i] if i < len(name) else "",
                said[i] if i < len(said) else "",
                kept[i] if i < len(kept) else "",
                verdict[i] if i < len(verdict) else "",
            )
            lines.append(f"{cells[0]:<{w_name}} | {cells[1]:<{w_said}} | "
                         f"{cells[2]:<{w_kept}} | {cells[3]}".rstrip())
        lines.append("")
    passed = sum(r.passed for r in results)
    lines.append(f"{passed}/{len(results)} faults passed")
    return "\n".join(lines)
