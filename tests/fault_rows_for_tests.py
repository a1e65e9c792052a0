"""Fault rows that misbehave on purpose, for the harness's own tests (test_bench_faults):
one loses something, one kills its process, one never returns, one passes."""

from __future__ import annotations

import os
import time
from typing import Any

from app.bench.fault_report import Outcome


def loses_a_file(ctx: Any) -> Outcome:
    out = Outcome(said=["warning: the recording could not be finished"], kept="nothing")
    out.problem("lost", "the conversation's recording is gone")
    return out


def aborts(ctx: Any) -> Outcome:
    os.abort()  # as a C extension's fatal error does


def never_returns(ctx: Any) -> Outcome:
    time.sleep(3600)
    return Outcome()


def passes(ctx: Any) -> Outcome:
    (ctx.home / "kept.txt").write_text("ok")
    return Outcome(said=["info: all is well"], kept="kept.txt")
