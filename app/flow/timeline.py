"""The shared timeline: one session clock, bounded buffers, and the unit cutter.

Capture sources push into it (it is their `AudioSink` and `FrameSink`); the session loop
cuts units out of it (`next_unit`, `wait_unit`, `flush`).

The clock. The microphone's sample count is the master clock: native sample n is at
session time n / native_rate, and unit k covers [k * unit_seconds, (k+1) * unit_seconds).
Capture times (monotonic seconds) are mapped onto that axis by `SampleClock`, which learns
the offset from the first timed audio block and tracks the mic's drift, so that a block
arriving later than its sample count predicts (by more than `gap_tolerance`) is a gap:
silence is written in its place, and the units that hold it say so (`Unit.gap_samples`).

Audio. `push_audio` (called from the device's callback) validates, takes one short lock,
and copies the block into a fixed ring of native-rate samples: no resampling, no
allocation on the steady path. The consumer pulls exactly the input a unit needs and
resamples it with `StreamResampler`, whose state carries over, so the units' audio
concatenated equals resampling the whole stream at once. Audio is never dropped while the
unread audio fits in `audio_capacity_seconds`; past that the oldest unread audio is
dropped, and that is an overflow: counted and recorded as an `OverflowEvent` by the
producer, passed to `on_overflow` by the consumer (the next `next_unit`, `wait_unit` or
`flush`), so that whatever a subscriber does with it (an event, a line in the recording's
log, a disk sync) never runs on the audio callback; the dropped span comes out as flagged
silence so units stay contiguous.

Frames. Frames are kept sorted by capture time (out-of-order arrivals are inserted in
place; equal times keep arrival order, the later arrival counting as newer). A unit with
N = `frames_per_unit` gets, for each i in 0..N-1, the latest frame captured at or before
start + (i+1) * duration / N; with N = 1 that is the latest frame at or before the unit's
end. A frame may be chosen again when the camera is slower than the slots. Frames that
can no longer be chosen are released: `skipped` when a newer frame took their slot,
`dropped` when they arrived too late for any unit still to be cut or the buffer
(`frame_capacity` frames) was full because the consumer is slow.

`Unit.gap_samples` counts every consumer-rate sample the timeline filled with silence: a
capture gap, audio dropped by an overflow, or the padding of the final unit at `flush`.
"""

from __future__ import annotations

import bisect
import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.flow.clock import SampleClock
from app.flow.resample import StreamResampler, check_rate
from app.flow.ring import AudioRing
from app.flow.spans import SpanSet
from app.model.contract import Unit, VideoFrame

_F32 = np.dtype(np.float32)
MAX_UNIT_SECONDS = 60.0
MAX_FRAMES_PER_UNIT = 64
# Beyond one unit's audio, the ring must hold the resampler's look-ahead and a margin for
# the consumer's wake-up; anything smaller is a configuration that overflows every unit.
MIN_CAPACITY_MARGIN_S = 0.05


@dataclass(frozen=True)
class OverflowEvent:
    """The consumer fell so far behind that unread audio exceeded the buffer's capacity.

    The oldest unread audio, [lost_from, lost_to) on the session clock, was dropped; the
    units covering it carry silence and count it in `gap_samples`.
    """

    lost_from: float
    lost_to: float
    lost_samples: int
    capacity_seconds: float

    def describe(self) -> str:
        return (
            f"audio buffer full ({self.capacity_seconds:g} s unread): dropped "
            f"{self.lost_to - self.lost_from:.3f} s of the oldest audio "
            f"({self.lost_from:.3f}-{self.lost_to:.3f} s); the consumer is too slow"
        )


@dataclass(frozen=True)
class TimelineStats:
    """Counters since the timeline was made. Seconds are on the session clock."""

    units_cut: int
    audio_seconds: float  # session time the audio has reached, filled gaps included
    buffered_seconds: float  # audio pushed but not yet pulled into a unit
    gaps: int
    gap_seconds: float  # capture gaps filled with silence
    gap_samples: int  # consumer-rate silence in the units cut (gaps, overflow, padding)
    overflows: int
    overflow_seconds: float
    clock_resyncs: int
    pushes_after_close: int
    frames_pushed: int
    frames_delivered: int  # distinct frames put into at least one unit
    frames_skipped: int  # a newer frame took their slot
    frames_dropped: int  # too late for any unit still to be cut, or evicted when full
    frames_late: int  # the part of frames_dropped that came too late
    frames_pending: int  # in the buffer, not yet delivered


class _Frame:
    __slots__ = ("delivered", "pixels", "seq", "t")

    def __init__(self, t: float, seq: int, pixels: np.ndarray) -> None:
        self.t = t  # capture time (the sources' clock, not yet session time)
        self.seq = seq
        self.pixels = pixels
        self.delivered = False


def _check_time(value: object) -> float:
    """A capture time as a float, or a ValueError that says what was wrong with it."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"capture time must be a finite number of seconds, got {value!r}")
    t = float(value)
    if not math.isfinite(t):
        raise ValueError(f"capture time must be a finite number of seconds, got {value!r}")
    return t


def _positive_seconds(value: object, what: str, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and 0 < value <= upper):
        raise ValueError(f"{what} must be more than 0 and at most {upper:g} s, got {value!r}")
    return value


class Timeline:
    """One session's clock and buffers; an AudioSink and a FrameSink; the unit cutter.

    Threads: any number of producers (`push_audio` from the audio callback, `push_frame`
    from the camera thread) and one consumer (`next_unit` / `wait_unit` / `flush`; extra
    consumers are serialised, not parallel).

    Arguments: `unit_seconds` and `out_rate` are the backend's unit and input rate (a unit
    must be a whole number of samples). `native_rate` pre-allocates for a known device
    rate; otherwise the first `push_audio` sets it. `audio_capacity_seconds` bounds the
    unread audio (overflow past it); a capture-time jump longer than it re-anchors the
    clock (`clock_resyncs`) instead of being filled with silence. `frame_capacity` bounds
    the frames held. `gap_tolerance` is the lateness taken as jitter, not a gap.
    `frame_max_age` leaves a slot empty rather than give it a frame older than that.
    `on_overflow` runs on the consumer's thread, outside the locks, never on a producer's
    (the audio callback must do nothing but copy); let it not raise.
    """

    def __init__(
        self,
        unit_seconds: float,
        out_rate: int,
        *,
        native_rate: int | None = None,
        frames_per_unit: int = 1,
        audio_capacity_seconds: float = 10.0,
        frame_capacity: int = 64,
        gap_tolerance: float = 0.04,
        frame_max_age: float | None = None,
        on_overflow: Callable[[OverflowEvent], None] | None = None,
        max_overflow_events: int = 100,
    ) -> None:
        self.unit_seconds = _positive_seconds(unit_seconds, "unit length", MAX_UNIT_SECONDS)
        self.out_rate = check_rate(out_rate, "consumer sample rate")
        exact = self.unit_seconds * self.out_rate
        self.unit_samples = round(exact)
        if abs(exact - self.unit_samples) > 1e-6 * max(1.0, exact):
            raise ValueError(
                f"a unit of {self.unit_seconds:g} s is not a whole number of samples at "
                f"{self.out_rate} Hz ({exact:.3f}); choose a length such as 0.08 or 1.0 s"
            )
        if isinstance(frames_per_unit, bool) or not isinstance(frames_per_unit, int) or not (
            0 <= frames_per_unit <= MAX_FRAMES_PER_UNIT
        ):
            raise ValueError(
                f"frames per unit must be a whole number from 0 to {MAX_FRAMES_PER_UNIT}, "
                f"got {frames_per_unit!r}"
            )
        self.frames_per_unit = frames_per_unit
        self.audio_capacity_seconds = _positive_seconds(
            audio_capacity_seconds, "audio buffer capacity", 3600.0
        )
        if self.audio_capacity_seconds < self.unit_seconds + MIN_CAPACITY_MARGIN_S:
            raise ValueError(
                f"audio buffer capacity of {self.audio_capacity_seconds:g} s cannot hold a "
                f"unit of {self.unit_seconds:g} s; give it at least "
                f"{self.unit_seconds + MIN_CAPACITY_MARGIN_S:g} s"
            )
        if isinstance(frame_capacity, bool) or not isinstance(frame_capacity, int) or (
            frame_capacity < max(1, frames_per_unit)
        ):
            raise ValueError(
                f"frame capacity must be a whole number of frames, at least "
                f"{max(1, frames_per_unit)}, got {frame_capacity!r}"
            )
        self.frame_capacity = frame_capacity
        self.gap_tolerance = _positive_seconds(gap_tolerance, "gap tolerance", 10.0)
        self.frame_max_age = (
            None if frame_max_age is None
            else _positive_seconds(frame_max_age, "frame age limit", 3600.0)
        )
        self._on_overflow = on_overflow

        # Producer side, under _lock (also the condition the consumer waits on).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.native_rate: int | None = None
        self._ring: AudioRing | None = None
        self._clock: SampleClock | None = None
        self._spans = SpanSet()  # native-sample ranges that hold filled-in silence
        self._closed = False
        self._wake_at: int | None = None  # a waiting consumer wants write_pos >= this
        self._waiters = 0
        self._gaps_native = 0
        self._overflows = 0
        self._overflow_native = 0
        self._pushes_after_close = 0
        self._overflow_log: collections.deque[OverflowEvent] = collections.deque(
            maxlen=max_overflow_events
        )
        self._overflows_reported = 0  # how many the consumer has passed to on_overflow

        # Frames, under _frame_lock, so a camera push never waits for the audio callback.
        self._frame_lock = threading.Lock()
        self._frames: list[_Frame] = []
        self._frame_times: list[float] = []  # parallel to _frames, for bisect
        self._frame_seq = 0
        self._frames_pushed = 0
        self._frames_delivered = 0
        self._frames_skipped = 0
        self._frames_late = 0
        self._frames_evicted = 0

        # Consumer side, under _cut_lock.
        self._cut_lock = threading.Lock()
        self._resampler: StreamResampler | None = None
        self._index = 0  # the next unit to cut
        self._consumed = 0  # native samples fed to the resampler (lost ones as silence)
        self._staged: list[np.ndarray] = []  # resampled, not yet cut; starts at unit _index
        self._need_in = 0  # native samples that must exist before unit _index is complete
        self._units_cut = 0
        self._gap_samples_out = 0
        self._next_start = 0.0  # session start of unit _index (read by push_frame)

        if native_rate is not None:
            with self._lock:
                self._setup(check_rate(native_rate, "device sample rate"))

    # --- setup --------------------------------------------------------------------------

    def _setup(self, rate: int) -> None:
        """Allocate everything that depends on the device's rate (once, under _lock)."""
        resampler = StreamResampler(rate, self.out_rate)
        capacity = round(self.audio_capacity_seconds * rate)
        self._clock = SampleClock(
            rate, gap_tolerance=self.gap_tolerance, max_gap=self.audio_capacity_seconds
        )
        self._ring = AudioRing(capacity)
        self._resampler = resampler
        self._need_in = resampler.input_needed(self.unit_samples)
        self.native_rate = rate

    # --- producers ----------------------------------------------------------------------

    def push_audio(
        self, samples: np.ndarray, sample_rate: int, capture_time: float | None = None
    ) -> None:
        """Append mono float32 samples captured at `sample_rate` (see AudioSink)."""
        # Identity checks first: the callback's usual block passes them in ~0.1 µs.
        if type(samples) is not np.ndarray or samples.dtype is not _F32 or samples.ndim != 1:
            samples = self._coerce_audio(samples)
        if sample_rate != self.native_rate or self._ring is None:
            self._check_audio_rate(sample_rate)
        if capture_time is not None and not (
            type(capture_time) is float and math.isfinite(capture_time)
        ):
            capture_time = _check_time(capture_time)
        n = len(samples)
        if n == 0:
            return
        with self._lock:
            if self._closed:
                self._pushes_after_close += 1
                return
            ring = self._ring
            gap = 0
            if capture_time is not None:
                w = ring.write_pos
                gap = self._clock.observe(capture_time, w, n)
                if gap:
                    self._spans.add(w, w + gap)
                    self._gaps_native += gap
            lost = ring.write(samples, gap)
            if lost is not None:
                self._record_overflow(lost)  # reported by the consumer, not from here
            if self._wake_at is not None and ring.write_pos >= self._wake_at:
                self._cond.notify_all()

    @staticmethod
    def _coerce_audio(samples: object) -> np.ndarray:
        if not isinstance(samples, np.ndarray):
            raise ValueError(f"audio must be a numpy array of samples, got {type(samples)!r}")
        if samples.ndim == 2 and samples.shape[1] == 1:
            samples = samples[:, 0]  # sounddevice hands mono input as (frames, 1)
        if samples.ndim != 1:
            raise ValueError(
                f"audio must be mono: a 1-D array or (frames, 1), got shape {samples.shape}"
            )
        if samples.dtype.kind != "f":
            raise ValueError(
                f"audio must be floating-point samples in [-1, 1], got dtype {samples.dtype}"
            )
        return samples if samples.dtype == _F32 else samples.astype(np.float32)

    def _check_audio_rate(self, sample_rate: int) -> None:
        with self._lock:
            if self._ring is None:
                self._setup(check_rate(sample_rate, "device sample rate"))
                return
        if sample_rate != self.native_rate:
            raise ValueError(
                f"audio arrived at {sample_rate!r} Hz but this timeline runs at "
                f"{self.native_rate} Hz; a session keeps one microphone rate"
            )

    def _record_overflow(self, lost: tuple[int, int]) -> None:
        start, stop = lost
        self._spans.add(start, stop)
        self._overflows += 1
        self._overflow_native += stop - start
        rate = self.native_rate
        event = OverflowEvent(start / rate, stop / rate, stop - start, self.audio_capacity_seconds)
        self._overflow_log.append(event)

    def _report_overflows(self) -> None:
        """Consumer side: pass overflows recorded since the last call to `on_overflow`.

        More than the log keeps (`max_overflow_events`) between two calls: the oldest are
        only counted (stats), the ones kept are passed on.
        """
        with self._lock:
            new = self._overflows - self._overflows_reported
            self._overflows_reported = self._overflows
            events = list(self._overflow_log)[-new:] if new > 0 else []
        if self._on_overflow is not None:
            for event in events:
                self._on_overflow(event)

    def push_frame(self, pixels: np.ndarray, capture_time: float) -> None:
        """Add one H×W×3 uint8 RGB frame captured at `capture_time` (see FrameSink).

        The timeline keeps a reference to `pixels`: the caller must not write to it after.
        """
        if (
            type(pixels) is not np.ndarray
            or pixels.ndim != 3
            or pixels.shape[2] != 3
            or pixels.dtype != np.uint8
        ):
            raise ValueError(
                "a frame must be an H×W×3 uint8 RGB array, got "
                + (f"shape {pixels.shape} dtype {pixels.dtype}"
                   if isinstance(pixels, np.ndarray) else repr(type(pixels)))
            )
        t = _check_time(capture_time)
        clock = self._clock
        # A float read needs no lock; a stale offset moves the horizon by microseconds.
        offset = None if clock is None else clock.offset
        with self._frame_lock:
            self._frames_pushed += 1
            seq = self._frame_seq
            self._frame_seq += 1
            times = self._frame_times
            if offset is not None and times:
                horizon = self._next_start + offset
                if t < horizon:
                    j = bisect.bisect_right(times, horizon) - 1
                    if j >= 0 and times[j] > t:
                        # A newer frame already covers the start of the next unit: this
                        # one can never be chosen.
                        self._frames_late += 1
                        return
            i = bisect.bisect_right(times, t)  # after equal times: arrival order
            times.insert(i, t)
            self._frames.insert(i, _Frame(t, seq, pixels))
            if len(times) > self.frame_capacity:
                # The consumer is behind: let go of the oldest frame.
                del times[0]
                old = self._frames.pop(0)
                if not old.delivered:
                    self._frames_evicted += 1

    # --- consumer -----------------------------------------------------------------------

    def next_unit(self) -> Unit | None:
        """The next unit if all its audio has arrived, else None. Never blocks on audio.

        Overflows the producers recorded since the last call go to `on_overflow` first.
        """
        if self._overflows != self._overflows_reported:  # int reads: no lock needed
            self._report_overflows()
        ring = self._ring
        # Lock-free "not yet": the common answer between units (an int read is atomic).
        if ring is None or (ring.write_pos < self._need_in and not self._closed):
            return None
        with self._cut_lock:
            return self._cut(pad=False)

    def wait_unit(self, timeout: float | None = None) -> Unit | None:
        """The next unit, waiting up to `timeout` seconds (None: until it comes or close)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            unit = self.next_unit()
            if unit is not None:
                return unit
            with self._cond:
                if self._closed:
                    return None
                ring = self._ring
                need = 0 if ring is None else self._need_in
                if ring is not None and ring.write_pos >= need:
                    continue  # arrived meanwhile
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                # need 0 with no ring yet: wake on the first push.
                self._wake_at = need if self._wake_at is None else min(self._wake_at, need)
                self._waiters += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiters -= 1
                    if self._waiters == 0:
                        self._wake_at = None

    def close(self) -> None:
        """End of stream: later pushes are ignored (and counted); waiters return."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def flush(self) -> list[Unit]:
        """Close, then return every unit still owed, the last one padded with silence.

        The final partial unit is returned only when it holds some real audio; its
        padding counts in `gap_samples`.
        """
        self.close()
        self._report_overflows()
        units: list[Unit] = []
        with self._cut_lock:
            if self._resampler is None:
                return units
            while (unit := self._cut(pad=False)) is not None:
                units.append(unit)
            rs = self._resampler
            with self._lock:
                end = self._ring.write_pos
            real_out = -((-end * rs.up) // rs.down)  # outputs that rest on real input
            if real_out > self._index * self.unit_samples:
                with self._lock:
                    self._spans.add(end, end + 2 * rs.input_needed(self.unit_samples) + 1)
            # Padded cuts until every real output is in a unit: the first may be a whole
            # unit that only lacked the resampler's lookahead, with a sliver after it.
            while real_out > self._index * self.unit_samples:
                unit = self._cut(pad=True)
                if unit is None:
                    break
                units.append(unit)
        return units

    def _cut(self, pad: bool) -> Unit | None:
        """Cut unit _index if its audio is there (padding with silence if `pad`)."""
        rs = self._resampler
        k = self._index
        size = self.unit_samples
        end_out = (k + 1) * size
        if rs.produced < end_out and not self._pull(self._need_in, pad):
            return None
        with self._lock:
            gap = self._spans.count_mapped(k * size, end_out, rs.up, rs.down)
            # Ranges wholly before the next unit's first sample can be forgotten.
            self._spans.drop_before((end_out * rs.down) // rs.up)
        staged = self._staged[0] if len(self._staged) == 1 else np.concatenate(self._staged)
        audio = staged[:size]
        rest = staged[size:]
        self._staged = [rest.copy()] if len(rest) else []
        start = k * self.unit_seconds
        frames = self._choose_frames(start)
        self._index = k + 1
        self._next_start = (k + 1) * self.unit_seconds
        self._need_in = rs.input_needed((k + 2) * size)
        self._units_cut += 1
        self._gap_samples_out += gap
        return Unit(
            index=k,
            start=start,
            duration=self.unit_seconds,
            sample_rate=self.out_rate,
            audio=audio,
            frames=frames,
            gap_samples=gap,
        )

    def _pull(self, need_in: int, pad: bool) -> bool:
        """Feed the resampler native samples up to `need_in`; False if they are not all here.

        Samples an overflow dropped are fed as silence; with `pad`, so is what never came.
        """
        ring = self._ring
        with self._lock:
            read_pos, write_pos = ring.read_pos, ring.write_pos
            if write_pos < need_in and not pad:
                return False
            stop = min(need_in, write_pos)
            consumed = self._consumed
            lost = max(0, min(read_pos, stop) - consumed)
            data_from = max(read_pos, consumed)
            data = ring.read(data_from, stop) if stop > data_from else None
            ring.consume_to(stop)
        parts = []
        if lost:
            parts.append(np.zeros(lost, dtype=np.float32))
        if data is not None:
            parts.append(data)
        if need_in > stop:
            parts.append(np.zeros(need_in - stop, dtype=np.float32))
        self._consumed = max(consumed, need_in)
        chunk = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.zeros(0, np.float32)])
        out = self._resampler.process(chunk)
        if len(out):
            self._staged.append(out)
        return True

    def _choose_frames(self, start: float) -> tuple[VideoFrame, ...]:
        """Pick unit frames by the policy, then release those no later unit can use."""
        clock = self._clock
        offset = None if clock is None else clock.offset
        if offset is None:
            return ()  # no timed audio yet: frames cannot be placed on the session clock
        n = self.frames_per_unit
        dur = self.unit_seconds
        max_age = self.frame_max_age
        chosen: list[VideoFrame] = []
        with self._frame_lock:
            times = self._frame_times
            frames = self._frames
            for i in range(n):
                target = start + (i + 1) * dur / n + offset
                j = bisect.bisect_right(times, target) - 1
                if j < 0 or (max_age is not None and times[j] < target - max_age):
                    continue
                f = frames[j]
                if not f.delivered:
                    f.delivered = True
                    self._frames_delivered += 1
                chosen.append(VideoFrame(pixels=f.pixels, t=f.t - offset, seq=f.seq))
            # Keep the latest frame at or before the next unit's start (it may still be
            # the best for the next unit) and everything after it.
            horizon = start + dur + offset
            j = bisect.bisect_right(times, horizon) - 1
            if j > 0:
                for f in frames[:j]:
                    if not f.delivered:
                        self._frames_skipped += 1
                del frames[:j]
                del times[:j]
        return tuple(chosen)

    # --- reporting ----------------------------------------------------------------------

    def session_time(self, capture_time: float) -> float | None:
        """Where a capture time falls on the session clock (None before timed audio)."""
        clock = self._clock
        return None if clock is None else clock.to_session(capture_time)

    def overflow_events(self) -> list[OverflowEvent]:
        """The most recent overflows, oldest first (bounded)."""
        with self._lock:
            return list(self._overflow_log)

    def stats(self) -> TimelineStats:
        with self._lock:
            rate = self.native_rate or 1
            ring = self._ring
            written = 0 if ring is None else ring.write_pos
            buffered = 0 if ring is None else ring.buffered
            clock = self._clock
            gaps = 0 if clock is None else clock.gaps
            resyncs = 0 if clock is None else clock.resyncs
            gap_native = self._gaps_native
            overflows, overflow_native = self._overflows, self._overflow_native
            after_close = self._pushes_after_close
        with self._frame_lock:
            pending = sum(1 for f in self._frames if not f.delivered)
            frames = (
                self._frames_pushed,
                self._frames_delivered,
                self._frames_skipped,
                self._frames_late + self._frames_evicted,
                self._frames_late,
                pending,
            )
        return TimelineStats(
            units_cut=self._units_cut,
            audio_seconds=written / rate,
            buffered_seconds=buffered / rate,
            gaps=gaps,
            gap_seconds=gap_native / rate,
            gap_samples=self._gap_samples_out,
            overflows=overflows,
            overflow_seconds=overflow_native / rate,
            clock_resyncs=resyncs,
            pushes_after_close=after_close,
            frames_pushed=frames[0],
            frames_delivered=frames[1],
            frames_skipped=frames[2],
            frames_dropped=frames[3],
            frames_late=frames[4],
            frames_pending=frames[5],
        )
