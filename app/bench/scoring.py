"""Scoring a duplex conversation the way Full-Duplex-Bench v1/v1.5 scores one.

Pure functions over what a run leaves on disk: the user's track and the assistant's
track, sample-aligned on the session clock, the event log, and the task (where each
scripted line was actually spoken and what it expected). Nothing here runs the app, so
any saved run can be scored again.

The rules (our own code, after reading the benchmark's evaluation scripts):

* Segments. The user's track is cut with silero-vad (its default settings) and pauses
  up to USER_MERGE_GAP are merged, as v1.5's timing script does; the VAD's edges are then
  snapped to the clean track's first and last audible sample, because silero pads and
  rounds to 32 ms windows. The assistant's track is the exact signal the app played, so
  it is cut by level, and gaps shorter than MODEL_MERGE_GAP are merged (v1.5).
* Takeover (TOR, v1). After a user line the assistant took the turn unless it said
  nothing, or its output lasted under TAKEOVER_SECONDS with at most TAKEOVER_WORDS words.
  Words come from the backend's own text stream (what was heard, after a barge-in).
* Latency (v1): first assistant sound after the line began, minus the line's end,
  clamped at zero, over takeovers only.
* Pause handling (v1): a takeover in the pause, or while the user is finishing the
  thought after it (the assistant was set off by the pause); lower is better.
* Where a turn-taking answer's wait went (turn-based backends): the line's end to the
  end-of-turn decision (the controller's "responding"; voice activity and the end-of-turn
  model: the detector's part), the decision to the answer's first chunk being ready (the
  backend's part; zero when it was ready first, prepared during the pause), and from
  then to its first sample at the speaker (the flow's part: holding, queueing, playing).
* Stop latency (v1.5): how long the assistant's segment and the user's interrupting
  segment overlap. Response latency (v1.5): the user's segment end to the start of the
  next assistant segment.

Which targets gate a run depends on who decides when the assistant speaks. For a
turn-based backend the app does (voice activity, the end-of-turn silence, speculation),
so every target is the pipeline's. A native-duplex model decides itself (a random-weight
one at random): taking the floor and its timing (TOR, turn-taking latency) are then the
model's figures, reported but not gated, while what the flow still owns is gated: the
stop after a barge-in, underruns, keeping up with real time, memory.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

USER_MERGE_GAP = 0.6  # v1.5's get_timing merges user pauses up to this (seconds)
MODEL_MERGE_GAP = 0.5  # and the model's gaps up to this
TAKEOVER_SECONDS = 1.0  # v1: shorter output with few words is not a takeover
TAKEOVER_WORDS = 3
LEVEL_THRESHOLD_DB = -50.0  # the assistant track: louder than this is sound
SNAP_THRESHOLD = 10 ** (-48 / 20)  # the user track's audible-sample level for edge snapping
SNAP_REACH = 0.15  # seconds a VAD edge may move when snapped
BACKCHANNEL_WINDOW = 1.0  # a barge-in this long after a backchannel ends counts against it
# The app's parts of an answer's wait. The flow's: the 60 ms (a chunk ready must
# reach the speaker within a few device blocks). The detector's: the end-of-turn wait
# (with the model: asked at 0.2 s of silence, up to 0.15 s to answer on a 2-core machine,
# `duetto bench turn`; without: the silence) plus voice activity's 0.1 s to confirm a
# pause. With the model that is 0.45 s, inside the 0.5 s turn-taking target.
FLOW_PART = 0.06
VAD_CONFIRM = 0.1

Segment = tuple[float, float]


# ----------------------------------------------------------------------- segmentation
def merge(segments: list[Segment], gap: float) -> list[Segment]:
    """Join segments whose gap is at most `gap` seconds (sorted, non-overlapping out)."""
    out: list[Segment] = []
    for start, end in sorted(segments):
        if out and start - out[-1][1] <= gap:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def level_segments(
    signal: np.ndarray,
    rate: int,
    *,
    threshold_db: float = LEVEL_THRESHOLD_DB,
    merge_gap: float = MODEL_MERGE_GAP,
    frame_seconds: float = 0.01,
) -> list[Segment]:
    """Where a digital signal is audible: frames over `threshold_db` RMS, edges refined to
    the first and last sample over the same level, gaps up to `merge_gap` merged."""
    x = np.asarray(signal, dtype=np.float32).reshape(-1)
    frame = max(1, round(frame_seconds * rate))
    n = len(x) // frame
    if n == 0:
        return []
    power = np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    active = power > 10 ** (threshold_db / 10)
    amplitude = 10 ** (threshold_db / 20)
    segments: list[Segment] = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        lo, hi = first * frame, stop * frame
        loud = np.flatnonzero(np.abs(x[lo:hi]) > amplitude)
        if len(loud):
            segments.append((float(lo + loud[0]) / rate, float(lo + loud[-1] + 1) / rate))
        else:
            segments.append((float(lo) / rate, float(hi) / rate))
    return merge(segments, merge_gap)


@cache
def _silero():
    from silero_vad import load_silero_vad

    return load_silero_vad()


def snap_edges(signal: np.ndarray, rate: int, segments: list[Segment]) -> list[Segment]:
    """Move each edge to the nearest audible sample within SNAP_REACH, on a clean track.

    On a noisy track (the noise floor itself near the threshold) nothing moves: there the
    VAD's own edges are the better guess.
    """
    x = np.abs(np.asarray(signal, dtype=np.float32).reshape(-1))
    if len(x) == 0:
        return segments
    frame = max(1, rate // 100)
    n = len(x) // frame
    if n and np.percentile(np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)),
                                           axis=1)), 10) > SNAP_THRESHOLD / 4:
        return segments
    reach = round(SNAP_REACH * rate)
    out: list[Segment] = []
    for start, end in segments:
        s, e = round(start * rate), round(end * rate)
        lo, hi = max(0, s - reach), min(len(x), e + reach)
        head = np.flatnonzero(x[lo : min(hi, s + reach)] > SNAP_THRESHOLD)
        tail = np.flatnonzero(x[max(lo, e - reach) : hi] > SNAP_THRESHOLD)
        new_s = float(lo + head[0]) / rate if len(head) else start
        new_e = float(max(lo, e - reach) + tail[-1] + 1) / rate if len(tail) else end
        out.append((new_s, new_e) if new_e > new_s else (start, end))
    return out


def vad_segments(signal: np.ndarray, rate: int, *, merge_gap: float = USER_MERGE_GAP,
                 snap: bool = True) -> list[Segment]:
    """Speech in the user's track: silero-vad, merged, edges snapped (see snap_edges)."""
    import torch
    from silero_vad import get_speech_timestamps

    x = np.asarray(signal, dtype=np.float32).reshape(-1)
    if len(x) == 0:
        return []
    from app.bench.duplex_user import resample

    x16 = resample(x, rate, 16000)
    stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(x16)), _silero(),
                                   sampling_rate=16000)
    segments = [(float(s["start"]) / 16000, float(s["end"]) / 16000) for s in stamps]
    if snap:
        segments = snap_edges(x, rate, segments)
    return merge(segments, merge_gap)


# ----------------------------------------------------------------------- words
def words_by_response(events: list[dict[str, Any]]) -> dict[int, tuple[float, int]]:
    """Response id -> (time of its first text, words the user heard of it).

    Words are counted in the backend's own text; after a barge-in, in what was heard.
    """
    text: dict[int, list[str]] = {}
    first: dict[int, float] = {}
    heard: dict[int, str] = {}
    for ev in events:
        rid = ev.get("response")
        if rid is None:
            continue
        if ev.get("event") == "text":
            text.setdefault(rid, []).append(str(ev.get("text", "")))
            first.setdefault(rid, float(ev["t"]))
        elif ev.get("event") == "heard":
            heard[rid] = str(ev.get("text", ""))
    out = {}
    for rid, parts in text.items():
        said = heard.get(rid, "".join(parts))
        out[rid] = (first[rid], len(said.split()))
    return out


def answer_split(events: list[dict[str, Any]], end: float,
                 until: float) -> dict[str, float] | None:
    """The wait after a user line that ended at `end`, split into the detector's, the
    backend's and the flow's parts (module docstring); None when no answer played
    before `until`."""
    decided = next((float(ev["t"]) for ev in events if ev.get("event") == "state"
                    and ev.get("state") == "responding" and end <= float(ev["t"]) < until),
                   None)
    if decided is None:
        return None
    # Events are stamped with the audio's time. A verdict made on the listener's own
    # thread (recordings without `asked`) came that much later in real time than its
    # stamp (the listener caught up afterwards); one made off the listener is stamped
    # when it arrived.
    verdict_after = next((float(ev.get("seconds", 0.0)) for ev in events
                          if ev.get("event") == "turn_judged" and ev.get("complete")
                          and "asked" not in ev
                          and abs(float(ev["t"]) - decided) < 1e-6), 0.0)
    spoke = next((ev for ev in events if ev.get("event") == "state"
                  and ev.get("state") == "speaking" and decided <= float(ev["t"]) < until
                  and ev.get("response") is not None), None)
    if spoke is None:
        return None
    ready = next((float(ev["t"]) for ev in events if ev.get("event") == "answer_ready"
                  and ev.get("response") == spoke["response"]), None)
    if ready is None:
        return None
    heard = float(spoke["t"])
    decided += verdict_after
    return {"detector": round(decided - end, 3),
            "backend": round(max(0.0, ready - decided), 3),
            "flow": round(max(0.0, heard - max(ready, decided)), 3)}


# ----------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Takeover:
    tor: int
    first_start: float | None
    seconds: float
    words: int


def takeover(model: list[Segment], words: int) -> Takeover:
    """v1's rule on the assistant's segments after a user line."""
    if not model:
        return Takeover(0, None, 0.0, words)
    seconds = model[-1][1] - model[0][0]
    tor = 0 if seconds < TAKEOVER_SECONDS and words <= TAKEOVER_WORDS else 1
    return Takeover(tor, model[0][0], seconds, words)


def overlap(a: Segment, b: Segment) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def covering(segments: list[Segment], t: float) -> Segment | None:
    return next((s for s in segments if s[0] <= t < s[1]), None)


def user_segment_for(user: list[Segment], start: float, end: float) -> Segment | None:
    """The user's VAD segment that overlaps a scripted line most."""
    best = max(user, key=lambda s: overlap(s, (start, end)), default=None)
    return best if best is not None and overlap(best, (start, end)) > 0 else None


def next_model_start(model: list[Segment], after: float) -> float | None:
    return next((s[0] for s in model if s[0] > after), None)


def _window_words(responses: dict[int, tuple[float, int]], lo: float, hi: float) -> int:
    return sum(w for t, w in responses.values() if lo <= t < hi)


def _barge_in_between(events: list[dict[str, Any]], lo: float, hi: float) -> bool:
    return any(
        ev.get("event") == "state" and ev.get("state") == "interrupted" and lo <= ev["t"] <= hi
        for ev in events
    )


def score_lines(
    user: list[Segment],
    model: list[Segment],
    task_lines: list[dict[str, Any]],
    events: list[dict[str, Any]],
    end_time: float,
) -> list[dict[str, Any]]:
    """One result per scripted line (see the module docstring for each rule)."""
    responses = words_by_response(events)
    results = []
    for i, line in enumerate(task_lines):
        start, end = float(line["start"]), float(line["end"])
        next_start = float(task_lines[i + 1]["start"]) if i + 1 < len(task_lines) else end_time
        expect = line["expect"]
        r: dict[str, Any] = {"index": i, "expect": expect, "text": line["text"],
                             "start": round(start, 3), "end": round(end, 3),
                             "valid": True, "note": ""}
        if line.get("timed_out"):
            r["note"] = "spoken after its timeout: the assistant never gave the cue"
        if expect == "hold":
            # The thought goes on to the end of the line that completes it: an assistant
            # that starts talking while the user is finishing was set off by the pause.
            later = [ln for ln in task_lines[i + 1 :] if ln["expect"] != "hold"]
            next_start = float(later[0]["end"]) if later else next_start
        after = [s for s in model if start <= s[0] < next_start]
        words = _window_words(responses, start, next_start)
        u = user_segment_for(user, start, end)
        if expect in ("respond", "hold"):
            took = takeover(after, words)
            following = task_lines[i + 1] if i + 1 < len(task_lines) else None
            if (expect == "respond" and not took.tor and after and following is not None
                    and following["expect"] in ("interrupt", "continue")
                    and covering(model, float(following["start"])) is not None):
                # The user's next line cut the answer short, not the assistant: it had the
                # floor. (FDB scores turn-taking on samples where the user then stays quiet.)
                took = Takeover(1, took.first_start, took.seconds, took.words)
            r.update(tor=took.tor, output_seconds=round(took.seconds, 3), words=words)
            if expect == "respond" and took.tor and took.first_start is not None:
                r["latency"] = round(max(0.0, took.first_start - end), 3)
            if expect == "respond" and u is not None:
                nxt = next_model_start(model, u[1])
                r["response_latency"] = None if nxt is None else round(nxt - u[1], 3)
            split = answer_split(events, end, next_start) if expect == "respond" else None
            if split is not None:
                r.update({f"{part}_part": seconds for part, seconds in split.items()})
        elif expect in ("interrupt", "continue"):
            speaking = covering(model, start)
            if speaking is None:
                r["valid"] = False
                r["note"] = "the assistant was not speaking when the line began"
            elif expect == "continue":
                r["kept_floor"] = not _barge_in_between(events, start, end + BACKCHANNEL_WINDOW)
            else:
                took = takeover(after, words)
                r.update(tor=took.tor, output_seconds=round(took.seconds, 3), words=words)
                if took.tor and took.first_start is not None:
                    r["latency"] = round(max(0.0, took.first_start - end), 3)
                if u is None:
                    r["note"] = "the interruption was not found in the user's track"
                else:
                    r["stop_latency"] = round(overlap(u, speaking), 3)
                    nxt = next_model_start(model, u[1])
                    r["response_latency"] = None if nxt is None else round(nxt - u[1], 3)
        results.append(r)
    return results


def session_figures(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the session itself reported: costs, underruns, its own latency measurements."""
    ended = next((ev for ev in reversed(events) if ev.get("event") == "ended"), None)
    metrics = (ended or {}).get("metrics") or {}
    compute = [float(ev["compute"]) for ev in events if ev.get("event") == "unit"]
    lag = [float(ev["lag"]) for ev in events if ev.get("event") == "unit"]
    own: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("event") == "latency":
            own.setdefault(str(ev.get("kind")), []).append(float(ev["seconds"]))
    return {
        "ended": ended is not None,
        "underruns": int(metrics.get("underruns", 0) or 0),
        "quiet_gaps": int(metrics.get("quiet_gaps", 0) or 0),
        "dropped_frames": int(metrics.get("dropped_frames", 0) or 0),
        "real_time_factor": metrics.get("real_time_factor"),
        "unit_compute": compute,
        "unit_lag": lag,
        "errors": [ev.get("message", "") for ev in events if ev.get("event") == "error"],
        "overflows": sum(1 for ev in events if ev.get("event") == "overflow"),
        "session_latency": own,
    }


def score_recording(
    user_track: np.ndarray,
    assistant_track: np.ndarray,
    rate: int,
    task: dict[str, Any],
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything about one scenario's run, as plain data (JSON-ready)."""
    user = vad_segments(user_track, rate)
    model = level_segments(assistant_track, rate)
    end_time = max(len(user_track), len(assistant_track)) / rate
    lines = score_lines(user, model, task["lines"], events, end_time)
    return {
        "scenario": task["scenario"],
        "category": task.get("category", ""),
        "duration": round(end_time, 3),
        "user_segments": [[round(a, 3), round(b, 3)] for a, b in user],
        "assistant_segments": [[round(a, 3), round(b, 3)] for a, b in model],
        "lines": lines,
        "session": session_figures(events),
    }


# ----------------------------------------------------------------------- summary
def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))], 3)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def pool(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over every scored line of `scores` (one scenario or a whole run)."""
    lines = [r for s in scores for r in s["lines"]]

    def of(expect: str, key: str, valid_only: bool = True) -> list[float]:
        return [r[key] for r in lines if r["expect"] == expect and key in r
                and r[key] is not None and (r["valid"] or not valid_only)]

    interrupts = [r for r in lines if r["expect"] == "interrupt"]
    backchannels = [r for r in lines if r["expect"] == "continue"]
    compute = [c for s in scores for c in s["session"]["unit_compute"]]
    lag = [c for s in scores for c in s["session"]["unit_lag"]]
    return {
        "turn_taking": {"count": len(of("respond", "tor")), "tor": _mean(of("respond", "tor")),
                        "latency_median": _median(of("respond", "latency")),
                        "latency_p90": _p90(of("respond", "latency")),
                        "response_latency_median": _median(of("respond", "response_latency")),
                        "split_count": len(of("respond", "flow_part")),
                        "detector_part_median": _median(of("respond", "detector_part")),
                        "backend_part_median": _median(of("respond", "backend_part")),
                        "flow_part_median": _median(of("respond", "flow_part")),
                        "flow_part_p90": _p90(of("respond", "flow_part"))},
        "pause_handling": {"count": len(of("hold", "tor")), "tor": _mean(of("hold", "tor"))},
        "interruption": {
            "count": len(interrupts),
            "valid": sum(1 for r in interrupts if r["valid"]),
            "tor": _mean(of("interrupt", "tor")),
            "latency_median": _median(of("interrupt", "latency")),
            "stop_latency_median": _median(of("interrupt", "stop_latency")),
            "stop_latency_p90": _p90(of("interrupt", "stop_latency")),
            "stop_latency_max": max(of("interrupt", "stop_latency"), default=None),
            "response_latency_median": _median(of("interrupt", "response_latency")),
        },
        "backchannel": {
            "count": len(backchannels),
            "valid": sum(1 for r in backchannels if r["valid"]),
            "kept_floor": _mean([float(r["kept_floor"]) for r in backchannels
                                 if r["valid"] and "kept_floor" in r]),
        },
        "underruns": sum(s["session"]["underruns"] for s in scores),
        "quiet_gaps": sum(s["session"].get("quiet_gaps", 0) for s in scores),
        "dropped_frames": sum(s["session"]["dropped_frames"] for s in scores),
        "errors": sum(len(s["session"]["errors"]) for s in scores),
        "unit_compute_median": _median(compute),
        "unit_compute_p90": _p90(compute),
        "unit_lag_max": round(max(lag), 3) if lag else None,
        "unit_lag_p90": _p90(lag),
        "memory_growth_mb": max(
            (s["memory_growth_mb"] for s in scores if s.get("memory_growth_mb") is not None),
            default=None,
        ),
        "memory_peak_growth_mb": max(
            (s["memory_peak_growth_mb"] for s in scores
             if s.get("memory_peak_growth_mb") is not None),
            default=None,
        ),
    }


def _checks(summary: dict[str, Any], end_of_turn_silence: float,
            unit_seconds: float | None) -> list[tuple[str, bool, str]]:
    """Every target as (name, met, who owns it): "model" when a native-duplex model's own
    decisions set the figure, "flow" when the app's pipeline does, "native" for the
    real-time check that only a model stepping in real time has (a turn-based model's
    units wait while it answers, by design). A figure that could not be measured misses."""
    tt, it = summary["turn_taking"], summary["interruption"]
    limit = end_of_turn_silence + 0.15
    detector_part = end_of_turn_silence + VAD_CONFIRM

    def at_least(v: float | None, lo: float) -> bool:
        return v is not None and v >= lo

    def at_most(v: float | None, hi: float) -> bool:
        return v is not None and v <= hi + 1e-9

    checks = [
        ("turn-taking TOR >= 0.95", at_least(tt["tor"], 0.95), "model"),
        (f"turn-taking latency median <= {limit:.2f} s", at_most(tt["latency_median"], limit),
         "model"),
        ("interruption TOR >= 0.95", at_least(it["tor"], 0.95), "model"),

        ("stop latency median <= 0.15 s", at_most(it["stop_latency_median"], 0.15), "flow"),
        ("stop latency max <= 0.25 s", at_most(it.get("stop_latency_max"), 0.25), "flow"),
        ("zero underruns", summary["underruns"] == 0, "flow"),
    ]
    if tt.get("split_count"):
        # The app's own parts of a turn-based answer's wait; a native model's answers have
        # no split (it decides itself when to speak), so there these do not appear.
        checks += [
            (f"end of speech -> decision median <= {detector_part:.2f} s",
             at_most(tt.get("detector_part_median"), detector_part), "flow"),
            (f"first chunk ready -> first sample median <= {FLOW_PART * 1000:.0f} ms",
             at_most(tt.get("flow_part_median"), FLOW_PART), "flow"),
        ]
    if unit_seconds:
        checks.append((f"keeps real time: unit lag p90 <= {unit_seconds:.2f} s (one unit)",
                       at_most(summary.get("unit_lag_p90"), unit_seconds), "native"))
    if summary.get("memory_growth_mb") is not None:  # only long runs measure it
        checks.append(("memory flat (growth <= 20 MB)", summary["memory_growth_mb"] <= 20.0,
                       "flow"))
    return checks


def targets(summary: dict[str, Any], end_of_turn_silence: float, *,
            native_duplex: bool = False, unit_seconds: float | None = None
            ) -> dict[str, bool]:
    """The issue's targets that gate this run (module docstring: which apply to whom)."""
    return {name: ok for name, ok, owner in _checks(summary, end_of_turn_silence, unit_seconds)
            if (owner != "model" or not native_duplex) and (owner != "native" or native_duplex)}


def model_figures(summary: dict[str, Any], end_of_turn_silence: float) -> dict[str, bool]:
    """The targets a native-duplex model's own decisions set: reported, not gated."""
    return {name: ok for name, ok, owner in _checks(summary, end_of_turn_silence, None)
            if owner == "model"}
