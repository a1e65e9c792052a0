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


def test_the_gate_is_the_kept_memory_and_both_are_reported():
    """Samples at any moment hold the model's working memory, which grows with the
    context; the memory kept between units (after heap trims) is where a leak shows."""
    from app.bench.soak import SoakResult, report

    kept = [(60.0 * m + 10 * i, 600.0 + 2 * m) for m in range(5) for i in range(6)]
    sampled = [(60.0 * m + 2 * i, 640.0 + 10 * m) for m in range(5) for i in range(30)]
    r = SoakResult(5.0, kept_mb=minute_medians(kept, least=3),
                   memory_mb=minute_medians(sampled))
    _, r.memory_worst_mb = memory_flat(r.kept_mb)
    _, r.sampled_worst_mb = memory_flat(r.memory_mb)
    text = report(r)
    assert r.memory_worst_mb == 6.0 and r.sampled_worst_mb == 30.0
    assert "kept: largest distance from minute 2 6.0 MB" in text
    assert "any moment: 30.0 MB" in text and text.endswith("PASS")
    assert "608.0 (+6.0)" in text and "680.0 (+30.0)" in text  # minute 5, both columns
