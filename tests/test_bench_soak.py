"""The soak's arithmetic: its schedule of drop-outs and its memory verdict (the run
itself is a benchmark: `duetto bench soak --minutes N`)."""

from __future__ import annotations

from app.bench.soak import memory_flat, minute_medians, schedule


def test_drop_outs_take_turns_and_end_before_the_conversation_does():
    drops = schedule(minutes=5, every=60, length=5, camera=True)
    assert [(d.device, d.at, d.back) for d in drops] == [
        ("microphone", 60, 65), ("camera", 120, 125), ("microphone", 180, 185),
        ("camera", 240, 245)]
    assert {d.device for d in schedule(5, 60, 5, camera=False)} == {"microphone"}


def test_memory_is_judged_on_minute_medians_from_minute_two():
    samples = [(t, 500.0) for t in range(0, 60, 2)]  # minute 1: loading, not judged
    samples += [(t, 600.0 + (50.0 if t == 70 else 0.0)) for t in range(60, 120, 2)]
    samples += [(t, 612.0) for t in range(120, 180, 2)]
    medians = minute_medians(samples)
    assert [(m, mb) for m, mb, _ in medians] == [(1, 500.0), (2, 600.0), (3, 612.0)]
    assert memory_flat(medians) == (True, 12.0)  # one 50 MB spike moves no median
    grown = [*medians, (4, 625.0, 30)]
    assert memory_flat(grown) == (False, 25.0)
    assert memory_flat(medians[:1]) == (True, None)  # no minute 2 to compare with
