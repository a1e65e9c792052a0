"""The end-of-turn model's calls off the listener (app/flow/turn_judging.py): the
verdict comes back through `collect`, the newest request wins, a missing or failing
model is reported once, and closing leaves no thread behind. The scorer is a stand-in
that blocks until the test releases it (the real model is tested in test_turn_end.py)."""

from __future__ import annotations

import threading

import numpy as np

from app.flow.events import EventHub, EventKind
from app.flow.turn_end import RATE, TurnEndDetector, TurnJudge
from app.flow.turn_judging import TurnJudging, own_thread


class _GatedScorer:
    def __init__(self, p: float = 0.9) -> None:
        self.p = p
        self.release = threading.Event()
        self.calls: list[int] = []

    def probability(self, audio: np.ndarray) -> float:
        self.release.wait(5.0)
        self.calls.append(len(audio))
        return self.p


def _judging(scorer, **kwargs) -> tuple[TurnJudging, list]:
    events = EventHub()
    seen: list = []
    events.subscribe(seen.append)
    judge = TurnJudge(TurnEndDetector(scorer, 0.5) if scorer is not None else None,
                      **kwargs)
    judge.hear(np.ones(2 * RATE, dtype=np.float32), 0.0)
    return TurnJudging(judge, events, 1.2, threaded=True), seen


def test_the_verdict_arrives_through_collect_while_the_caller_goes_on():
    scorer = _GatedScorer()
    judging, seen = _judging(scorer)
    judging.ask(0.5, pause=1.9, silence=0.2, now=2.0)  # returns at once: the model waits
    assert judging.collect(2.02) == []
    scorer.release.set()
    assert judging.wait()
    (judged,) = judging.collect(2.1)
    assert judged.pause == 1.9 and judged.asked == 2.0 and judged.verdict.complete
    logged = [e for e in seen if e.kind is EventKind.TURN_JUDGED]
    assert len(logged) == 1 and logged[0].t == 2.1 and logged[0].data["asked"] == 2.0
    judging.close()


def test_a_request_still_waiting_is_replaced_by_a_newer_one():
    scorer = _GatedScorer()
    judging, _ = _judging(scorer)
    judging.ask(0.5, pause=1.0, silence=0.2, now=1.1)  # taken up by the thread...
    with judging._cond:  # ...which is then busy with it (not a guess at how long it takes)
        assert judging._cond.wait_for(lambda: judging._busy, timeout=5.0)
    judging.ask(0.5, pause=1.5, silence=0.2, now=1.6)  # waits...
    judging.ask(0.5, pause=1.9, silence=0.2, now=2.0)  # ...and is replaced by this one
    scorer.release.set()
    assert judging.wait()
    assert [j.pause for j in judging.collect(2.2)] == [1.0, 1.9]
    judging.close()


def test_a_missing_model_is_said_once_and_every_pause_gets_no_verdict():
    judging, seen = _judging(None, failure="the end-of-turn model is missing")
    judging.ask(0.5, pause=1.9, silence=0.2, now=2.0)
    judging.ask(0.5, pause=2.9, silence=0.2, now=3.0)
    got = judging.collect(3.1)
    assert [j.verdict for j in got] == [None, None]
    errors = [e.data["message"] for e in seen if e.kind is EventKind.ERROR]
    assert errors == ["the end-of-turn model is missing; the conversation goes on, and "
                      "turns end after 1.2 s of silence"]


def test_closing_stops_the_thread_even_with_a_request_waiting():
    scorer = _GatedScorer()
    judging, _ = _judging(scorer)
    judging.ask(0.5, pause=1.9, silence=0.2, now=2.0)
    scorer.release.set()
    judging.close()
    assert not [t for t in threading.enumerate() if t.name == "turn-judge"]
    judging.ask(0.5, pause=2.9, silence=0.2, now=3.0)  # after closing: nothing starts
    assert not [t for t in threading.enumerate() if t.name == "turn-judge"]


def test_on_a_small_machine_the_call_is_made_at_once_and_dated_when_it_returned():
    scorer = _GatedScorer()
    scorer.release.set()
    judging, seen = _judging(scorer)
    judging = TurnJudging(judging.judge, judging._events, 1.2, threaded=False)
    judging.ask(0.5, pause=1.9, silence=0.2, now=2.0)
    (judged,) = judging.collect(2.02)
    assert judged.asked == 2.0
    assert judged.decided == 2.0 + judged.verdict.seconds
    assert [e.t for e in seen if e.kind is EventKind.TURN_JUDGED] == [judged.decided]
    assert not [t for t in threading.enumerate() if t.name == "turn-judge"]


def test_the_judge_gets_its_own_thread_only_with_cores_to_spare():
    assert not own_thread(2) and not own_thread(3)
    assert own_thread(4) and own_thread(16)
