"""The duplex benchmark's table for people: one row per scenario, then the pooled figures
and the targets. Everything here reads the results dict that results.json holds."""

from __future__ import annotations

from typing import Any


def _s(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "-"
    return f"{v:.2f}{unit}" if unit else f"{v:.2f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}ms"


def _row(name: str, p: dict[str, Any], extra: str = "") -> str:
    tt, ph, it, bc = p["turn_taking"], p["pause_handling"], p["interruption"], p["backchannel"]
    cells = [
        f"{name:<30}",
        f"{_s(tt['tor'], ''):>5} {_s(tt['latency_median']):>6}" if tt["count"] else f"{'':>12}",
        f"{_s(ph['tor'], ''):>5}" if ph["count"] else f"{'':>5}",
        (f"{it['valid']}/{it['count']:<2} {_s(it['tor'], ''):>5} "
         f"{_ms(it['stop_latency_median']):>6} {_s(it['latency_median']):>6}"
         if it["count"] else f"{'':>25}"),
        (f"{bc['valid']}/{bc['count']:<2} {_s(bc['kept_floor'], ''):>5}"
         if bc["count"] else f"{'':>11}"),
        f"{p['underruns']:>4}",
        f"{_ms(p['unit_compute_median']):>6}",
    ]
    return " | ".join(cells) + (f" | {extra}" if extra else "")


HEADER = (
    f"{'scenario':<30} | {'turn: TOR   lat':>12} | {'pause':>5} | "
    f"{'interrupt: n TOR  stop   lat':>25} | {'backch: n kept':>11} | {'und.':>4} | "
    f"{'unit':>6} | wall"
)


def _mb(value: float | None) -> str:
    return "n/a (runs under 2 min)" if value is None else f"{value:.1f} MB"


def _memory(p: dict[str, Any]) -> str:
    if p.get("memory_growth_mb") is None:
        return "memory growth n/a (runs under 2 min)"
    return (f"memory kept: growth after the first minute {_mb(p['memory_growth_mb'])} "
            f"(minute medians of the samples between units; the highest raw sample "
            f"{_mb(p.get('memory_peak_growth_mb'))} above the first)")


def table(results: dict[str, Any]) -> str:
    lines = []
    if results.get("backend"):
        lines.append(f"backend: {results['backend']}")
    if results.get("machine"):
        lines.append(f"machine: {results['machine']}")
    lines += [HEADER, "-" * len(HEADER)]
    for s in results["scenarios"]:
        from app.bench.scoring import pool

        wall = s.get("wall_seconds")
        extra = f"{wall:.0f}s" if wall is not None else ""
        if s.get("note"):
            extra += f" ({s['note']})"
        lines.append(_row(s["scenario"], pool([s]), extra))
    lines.append("-" * len(HEADER))
    for category, p in results.get("categories", {}).items():
        lines.append(_row(f"[{category}]", p))
    lines.append(_row("ALL", results["summary"]))
    p = results["summary"]
    tt, it = p["turn_taking"], p["interruption"]
    lines += [
        "",
        f"smooth turn-taking   TOR {_s(tt['tor'], '')} over {tt['count']} turns; latency median "
        f"{_s(tt['latency_median'])}, p90 {_s(tt['latency_p90'])} (end-of-turn wait "
        f"{results.get('end_of_turn_silence', 0):.2f}s); v1.5 response latency median "
        f"{_s(tt['response_latency_median'])}",
        f"where the wait went  over {tt.get('split_count', 0)} answers, medians: end of "
        f"speech -> decision {_ms(tt.get('detector_part_median'))} (detector), decision -> "
        f"first chunk ready {_ms(tt.get('backend_part_median'))} (backend, this machine), "
        f"first chunk ready -> first sample {_ms(tt.get('flow_part_median'))} (flow; p90 "
        f"{_ms(tt.get('flow_part_p90'))})",
        f"pause handling       TOR {_s(p['pause_handling']['tor'], '')} over "
        f"{p['pause_handling']['count']} pauses (lower is better; reported, not gated)",
        f"user interruption    TOR {_s(it['tor'], '')} over {it['valid']} of {it['count']} "
        f"(valid: the assistant was speaking); latency median {_s(it['latency_median'])}; "
        f"stop latency median {_ms(it['stop_latency_median'])}, p90 "
        f"{_ms(it['stop_latency_p90'])}, max {_ms(it.get('stop_latency_max'))}; "
        f"v1.5 response latency median "
        f"{_s(it['response_latency_median'])}",
        f"backchannels         kept the floor {_s(p['backchannel']['kept_floor'], '')} over "
        f"{p['backchannel']['valid']} of {p['backchannel']['count']}",
        f"pipeline             underruns {p['underruns']} (gaps in silence, unheard: "
        f"{p.get('quiet_gaps', 0)}), dropped frames {p['dropped_frames']}, "
        f"errors {p['errors']}, unit compute median {_ms(p['unit_compute_median'])} p90 "
        f"{_ms(p['unit_compute_p90'])}, unit lag p90 {_s(p.get('unit_lag_p90'))} max "
        f"{_s(p['unit_lag_max'])}, " + _memory(p),
    ]
    for s in results["scenarios"]:
        if s.get("memory_by_minute_mb"):
            minutes = ", ".join(f"{mb:.0f}" for mb in s["memory_by_minute_mb"])
            lines.append(f"memory kept, {s['scenario']}, by minute from the second (MB): "
                         f"{minutes}")
    for name, ok in results.get("targets", {}).items():
        lines.append(f"target: {name:<40} {'yes' if ok else 'MISSED'}")
    if results.get("reported"):
        lines.append("native duplex: the model decides itself when to speak, so these are "
                     "its figures, reported but not gated:")
    for name, ok in results.get("reported", {}).items():
        lines.append(f"figure: {name:<40} {'met' if ok else 'not met'}")
    return "\n".join(lines)
