"""The player: the assistant's speech out to the speaker, stoppable at once.

The session (or a decoder thread) calls `write()` with speech chunks; an output device
callback pulls samples from a ring buffer. The callback never blocks, never allocates
beyond numpy views, and fills silence on underrun (counted). `flush()` drops everything
queued, so the next device block is silent: the stop latency of a barge-in is at most
one block plus what the device had already taken.

Everything the callback learns (which sample it played, when it reached the speaker,
when a flush took effect) lands in plain int/float attributes that other threads read:
no locks on the callback's side.

Two kinds of source. A turn-based model writes answers: each response starts once the
chunks after its first will keep up, by how late the backend's recent answers came
(answer_pace.py; before any was measured, once its jitter cushion is queued), ends with
`end_response()`, and `pause()` holds its place (an "mm-hm" loses nothing). A
native-duplex model (`live=True`) writes one continuous stream, a
frame every 80 ms whether it speaks or listens, with response ids marking its runs of
speech: the stream gathers a cushion once (again only after a flush or running dry),
any gap after sound is an underrun whichever response it falls in, and `pause()` mutes in
place: the stream keeps time, so a paused model is not heard later than it speaks (what
it said while muted is lost, and `heard()` knows it). A gap in the stream's silence (the
model listening, or between its runs) is not heard as a stutter: it only sets the stream
later behind the model, and is counted apart (`quiet_gaps`). A live chunk as long as the
cushion or longer (MiniCPM-o's 1 s units) says nothing about when the next one comes, so
playback waits after it arrived rather than for the cushion's samples: otherwise each
unit would have to be ready as early as the one that started the stream. A run of speech
in such chunks starts only once it can be sustained: its first sample waits as long
after it arrived as live_pace.py reckons the units after it may come later, plus the
cushion; in a stream already playing (silence queued before the run) the wait is made
up with more silence before the run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from app.flow.answer_pace import AnswerPace
from app.flow.live_pace import LivePace
from app.flow.spsc_ring import SpscRing
from app.model.contract import BackendSpec, SpeechChunk

QUIET = 1e-5  # a live stream's samples at or below this are its silence (about -100 dBFS)


class ChunkResampler(Protocol):
    def process(self, samples: np.ndarray) -> np.ndarray: ...


ResamplerFactory = Callable[[int, int], ChunkResampler]


@dataclass(frozen=True)
class Segment:
    """Where one speech chunk lies in the ring (running sample counts)."""

    start: int
    length: int
    response_id: int
    seq: int
    text_span: str

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class Heard:
    """How much of one response reached the speaker."""

    response_id: int
    samples: int
    chunks_complete: int
    text: str
    written: int = 0  # samples of it written to the player, played or not
    end: int = 0  # ring position one past its last sample written


@dataclass(frozen=True)
class PlayerStats:
    underruns: int
    underrun_samples: int
    dropped_chunks: int
    overflow_samples: int
    queued_seconds: float


class Player:
    """Speech out. Thread-safe for writers; `callback` is for the output stream only.

    `output_rate` is the device's native rate: chunks at any other rate are resampled
    here, upstream of the callback, by a resampler made per response.
    """

    def __init__(
        self,
        output_rate: int,
        *,
        capacity_seconds: float = 120.0,
        reference_seconds: float = 5.0,
        prebuffer_seconds: float = 0.15,
        max_prebuffer_seconds: float = 1.5,
        start_margin_seconds: float = 0.03,
        resampler_factory: ResamplerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        live: bool = False,
    ) -> None:
        if not 8000 <= output_rate <= 192000:
            raise ValueError(f"unsupported output sample rate {output_rate} Hz")
        self.output_rate = output_rate
        self.live = live  # see the module docstring; the session sets it from the backend
        self._ring = SpscRing(int(capacity_seconds * output_rate))
        self._resampler_factory = resampler_factory
        # Keyed by response id (an answer's resampler ends with it), or by sample rate for
        # a live stream (one filter across responses: no gap or click at their edges).
        self._resamplers: dict[int, ChunkResampler] = {}
        self._clock = clock
        self._write_lock = threading.Lock()  # writers among themselves, never the callback
        self._segments: deque[Segment] = deque(maxlen=4096)
        self._open_response: int | None = None  # a response still being written
        self._flushed_through = -1  # responses at or below this id are rejected
        self._dropped_chunks = 0
        self._overflow_samples = 0
        # Set by writers, honoured by the callback.
        self._flush_to = 0
        # Set by the callback, read by anyone.
        self.underruns = 0
        self.underrun_samples = 0
        self.quiet_gaps = 0  # live streams: times it ran dry in silence (module docstring)
        # (cut at, resumed at) ring positions of honoured flushes, and of live mutes
        # (pause() on a live stream); appended only then, never in steady state.
        self.flushes: deque[tuple[int, int]] = deque(maxlen=256)
        self._muted_from: int | None = None  # ring position where a live mute began
        self._block_start = 0  # ring position of the last block's first sample
        self._block_time = 0.0  # monotonic time that sample reaches the speaker
        self._stream_offset = 0.0  # monotonic - stream clock, learnt on the first callback
        self._offset_known = False
        self._expecting_more = False  # inside a response whose end was not written yet
        self.paused = False  # set by pause()/resume(); the callback holds its place
        # Jitter buffer: speech is generated in bursts, so a response starts (and restarts
        # after running dry) only once `prebuffer` samples are queued or its end is known.
        # Each underrun grows the prebuffer for what follows; clean responses shrink it.
        self._min_prebuffer = int(prebuffer_seconds * output_rate)
        self._max_prebuffer = int(max_prebuffer_seconds * output_rate)
        self.prebuffer = self._min_prebuffer
        # Ring position where playback waits for that cushion. The writer sets it (to an
        # empty ring's end) before publishing the samples, the callback (where it ran dry);
        # both only ever when the ring is empty, so both write the same value, and the
        # callback, reading the ring's fill before this, never plays a sample it did not
        # see when it decided. (A flag the callback cleared could undo a writer's set.)
        self._cushion_at = -1
        self._underruns_at_response_start = 0
        # Turn-based answers: how late their chunks come on this machine (answer_pace.py),
        # and (ring position, arrival, wait) of the answer that started in an empty ring:
        # it plays `wait` after it arrived, once answers have been measured.
        self._answer_pace = AnswerPace(most=max_prebuffer_seconds)
        self._start_margin = start_margin_seconds
        self._start_wait: tuple[int, float, float] = (-1, 0.0, 0.0)
        # Set by the callback when a response ran dry; counted as an underrun by write()
        # if the same response goes on (a gap inside speech), forgotten if it ended.
        self._starving = False
        self._starved_samples = 0
        # Live streams. Ring position from which everything written is silence (the writer
        # sets it before publishing; the callback, running dry after it, played silence
        # last), whether the last dry-out was such, and (writer's clock, samples) of the
        # chunk that landed in an empty ring and how long it waits after arriving.
        self._quiet_from = 0
        self._starving_quiet = False
        self._arrived: tuple[float, int, float] = (0.0, 0, 0.0)
        self._pace = LivePace(output_rate)
        self._offered = 0  # samples of the model's stream offered to write(), at our rate
        self.paced_runs = 0  # runs of speech held back beyond the cushion, and how long
        self.paced_seconds = 0.0
        # What the speaker played, every sample including silence, for the echo canceller
        # and the recording. `reference_mark` is (reference position, speaker time) of the
        # latest block, one tuple swapped in whole so readers never see half an update.
        self.reference = SpscRing(int(reference_seconds * output_rate))
        self.reference_mark: tuple[int, float] | None = None
        self.reference_overflows = 0
        # Counts of blocks where playback went from sound to silence by pause or flush,
        # and the speaker time of the latest such block.
        self.silenced = 0
        self.silenced_at = 0.0
        self._sounding = False

    def suit(self, spec: BackendSpec, answer_pace: AnswerPace | None = None) -> None:
        """Play as this backend speaks: one live stream for a native-duplex model, the
        cushion it asks for (a server's speech comes less evenly), and the pace its answers
        showed before (answer_pace.pace_of). Before playback."""
        self.live = spec.native_duplex
        if answer_pace is not None:
            self._answer_pace = answer_pace
        if spec.playback_cushion_ms is not None:
            asked = round(spec.playback_cushion_ms * self.output_rate / 1000)
            self._min_prebuffer = max(self._min_prebuffer, asked)
            self.prebuffer = max(self.prebuffer, asked)
            self._start_margin = max(self._start_margin, spec.playback_cushion_ms / 1000)

    # ----------------------------------------------------------------- writers
    def write(self, chunk: SpeechChunk) -> bool:
        """Queue one chunk. Returns False when the chunk was dropped (a flushed response)."""
        with self._write_lock:
            # Where this chunk lies on the stream the model made, dropped chunks counted
            # and padding not: the pace measures the model's lateness against it.
            offered = self._offered
            self._offered += round(np.size(chunk.audio) * self.output_rate / chunk.sample_rate)
            if chunk.response_id <= self._flushed_through:
                self._dropped_chunks += 1
                return False
            samples = self._to_output_rate(chunk)
            if self._starving and self.live and self._starving_quiet:
                self.quiet_gaps += 1  # ran dry in silence: unheard (module docstring)
            elif self._starving and (self.live or chunk.response_id == self._open_response):
                # The response went on after a gap: that gap was heard as a stutter.
                self.underruns += 1
                self.underrun_samples += self._starved_samples
                self.prebuffer = min(self._max_prebuffer, self.prebuffer * 2)
            self._starving = False
            self._starving_quiet = False
            self._starved_samples = 0
            wait: float | None = None  # a turn-based answer's paced start (see below)
            if self.live:
                # One stream: a cushion at its start and after a flush, not per response.
                starts = not self._expecting_more
            else:
                starts = chunk.response_id != self._open_response
                if starts:
                    self._adapt_prebuffer()
                    self._answer_pace.close()  # the one before, if its end never came
                    lead = self._answer_pace.lead()
                    wait = None if lead is None else lead + self._start_margin
                arrival = self._clock()
                self._answer_pace.chunk(arrival, len(samples) / self.output_rate)
            ring = self._ring
            # Empty once a pending flush is honoured: what it drops does not cushion.
            empty = ring.write_pos == max(ring.read_pos, self._flush_to)
            if starts and empty:
                if not self.live and wait is not None:
                    self._start_wait = (ring.write_pos, arrival, wait)
                self._cushion_at = ring.write_pos
            if self.live:
                self._pace_live(samples, empty, offered)
            self._open_response = chunk.response_id
            self._expecting_more = True  # before the samples are published (see _cushion_at)
            start = ring.write_pos
            taken = ring.write(samples)
            if taken < len(samples):
                self._overflow_samples += len(samples) - taken
            self._segments.append(
                Segment(start, taken, chunk.response_id, chunk.seq, chunk.text_span)
            )
            return True

    def _pace_live(self, samples: np.ndarray, empty: bool, offered: int) -> None:
        """Writer side, live streams, before `samples` are published: when they may play
        (module docstring). In an empty ring, the wait after arrival; after queued
        silence, more silence first where the run would start too soon."""
        ring = self._ring
        now = self._clock()
        sound = np.flatnonzero(np.abs(samples) > QUIET)
        lag = self._pace.note(now, offered, bool(sound.size))
        cushion = self.prebuffer / self.output_rate
        long = len(samples) >= self.prebuffer > 0
        starts_run = long and sound.size > 0 and (empty or self._quiet_from < ring.write_pos)
        wait = self._pace.lead(lag, cushion) if starts_run else cushion
        if starts_run and wait > cushion:
            self.paced_runs += 1
            self.paced_seconds += wait - cushion
        if empty:
            self._arrived = (now, len(samples), wait)
        elif starts_run:
            queued = (ring.write_pos - max(ring.read_pos, self._flush_to)) / self.output_rate
            pad = round((wait - queued) * self.output_rate)
            if pad > 0:
                ring.write(np.zeros(pad, np.float32))
        if sound.size:
            self._quiet_from = ring.write_pos + int(sound[-1]) + 1

    def skip(self, chunk: SpeechChunk) -> None:
        """A chunk of the model's stream that will not be written (its run was cut by a
        barge-in): the stream's time moves on all the same, and the pace must know it, or
        the next run's units look late by all that was skipped."""
        with self._write_lock:
            self._offered += round(np.size(chunk.audio) * self.output_rate / chunk.sample_rate)

    def _adapt_prebuffer(self) -> None:
        """Between responses: shrink the prebuffer slowly after a response ran clean."""
        if self.underruns == self._underruns_at_response_start:
            self.prebuffer = max(self._min_prebuffer, int(self.prebuffer * 0.9))
        self._underruns_at_response_start = self.underruns

    @property
    def written_position(self) -> int:
        """Ring position one past the newest queued sample (the writer's side)."""
        return self._ring.write_pos

    @property
    def stream_position(self) -> int:
        """Ring position one past the end of all that was written, as it will be heard:
        with what a live stream's resampler still owes (its look-ahead, some ms of the
        last chunk, which come out with the next). A run of speech ends there, not at
        `written_position`: a mute lifted at the latter let its last ms be heard."""
        with self._write_lock:
            owed = sum(getattr(r, "owed", lambda: 0)() for r in self._resamplers.values())
            return self._ring.write_pos + owed

    def end_response(self, response_id: int) -> None:
        """The backend finished this response: silence after it is not an underrun.

        Not for a live stream, which goes on after each response (the next frames are
        the model listening).
        """
        with self._write_lock:
            if self._open_response == response_id:
                self._expecting_more = False
                self._starving = False  # it ended: the silence was not a gap
                self._starved_samples = 0
                self._answer_pace.close()
            self._resamplers.pop(response_id, None)

    def flush(self) -> None:
        """Silence now: drop all queued audio and reject the rest of the open response."""
        with self._write_lock:
            if self._open_response is not None:
                self._flushed_through = max(self._flushed_through, self._open_response)
            self._expecting_more = False
            self._starving = False
            self._starved_samples = 0
            self._resamplers.clear()
            self._answer_pace.close()  # a cut answer: how late it came so far counts
            self._flush_to = self._ring.write_pos

    def pause(self) -> None:
        """Silence from the next block on, keeping the queue (a user's "mm-hm" may follow).

        A live stream is muted in place instead: it keeps time (module docstring).
        """
        self.paused = True

    def resume(self) -> None:
        """Carry on from the sample where pause() stopped."""
        self.paused = False

    def _to_output_rate(self, chunk: SpeechChunk) -> np.ndarray:
        audio = np.asarray(chunk.audio, dtype=np.float32).reshape(-1)
        if chunk.sample_rate == self.output_rate:
            return audio
        if self._resampler_factory is None:
            raise ValueError(
                f"speech at {chunk.sample_rate} Hz cannot be played at {self.output_rate} Hz "
                "without a resampler"
            )
        key = chunk.sample_rate if self.live else chunk.response_id
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resampler_factory(chunk.sample_rate, self.output_rate)
            self._resamplers[key] = resampler
        return resampler.process(audio)

    # ----------------------------------------------------------------- callback
    def callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """sounddevice OutputStream callback: copy from the ring, never wait."""
        if not self._offset_known:
            self._stream_offset = self._clock() - float(time_info.currentTime)
            self._offset_known = True
        dac_time = float(time_info.outputBufferDacTime) + self._stream_offset
        flush_to = self._flush_to
        flushed = False
        if flush_to > self._ring.read_pos:
            self.flushes.append((self._ring.read_pos, flush_to))
            self._ring.skip_to(flush_to)
            flushed = True
        ring = self._ring
        self._block_start = ring.read_pos
        self._block_time = dac_time
        mono = outdata[:, 0]
        paused = self.paused
        if self.live:
            self._track_mute(paused)
        # In this order: a writer marks the cushion and the response as open before it
        # publishes samples, so whatever this block sees queued, it sees those with it.
        queued = ring.available
        cushion_at = self._cushion_at
        expecting = self._expecting_more
        if paused and not self.live:
            mono.fill(0.0)
            got = 0
        elif (cushion_at == ring.read_pos and expecting
              and not self._cushion_ready(queued, cushion_at, float(time_info.currentTime)
                                          + self._stream_offset)):
            mono.fill(0.0)  # gathering a cushion before (re)starting
            got = 0
            if self._starving:
                self._starved_samples += frames
        else:
            n = min(frames, queued)  # only what was seen: later samples wait their cushion
            got = ring.read_into(mono[:n]) if n else 0
            if got < frames:
                mono[got:] = 0.0
            if got < frames and expecting:
                # Ran dry inside a response. Whether that was a stutter is known only when
                # more of it arrives (write() counts it then); if the response simply ended,
                # its end was just not reported yet. Either way, gather a cushion first.
                self._starving = True
                self._starving_quiet = self.live and self._quiet_from < ring.read_pos
                self._starved_samples += frames - got
                self._cushion_at = ring.read_pos
            if paused:  # a live stream, muted: its time passes unheard
                mono.fill(0.0)
                got = 0
        if self._sounding and (paused or flushed):
            self.silenced += 1
            self.silenced_at = dac_time
        self._sounding = got > 0
        for channel in range(1, outdata.shape[1]):
            outdata[:, channel] = mono
        mark = self.reference.write_pos
        if self.reference.write(mono) < frames:
            self.reference_overflows += 1  # nobody drains it: keep playing regardless
        self.reference_mark = (mark, dac_time)

    def _cushion_ready(self, queued: int, cushion_at: int, now: float) -> bool:
        """Callback side: whether playback may (re)start with `queued` samples at `now`."""
        if not self.live:
            at, arrived_at, wait = self._start_wait
            if at == cushion_at:  # an answer's start, paced (not a restart after a gap)
                return queued > 0 and (wait <= 0.0 or now - arrived_at >= wait)
        if self.live:
            arrived_at, length, wait = self._arrived
            if length >= self.prebuffer > 0:
                # A long chunk (module docstring): wait after it arrived, however much came
                # with it (a unit's speech, its turn's end and its silence come at once;
                # that says nothing about when the next unit comes).
                return now - arrived_at >= wait
        return queued >= self.prebuffer

    def _track_mute(self, paused: bool) -> None:
        """Callback side, live streams: remember what a mute skipped, for heard()."""
        if paused and self._muted_from is None:
            self._muted_from = self._ring.read_pos
        elif not paused and self._muted_from is not None:
            self.flushes.append((self._muted_from, self._ring.read_pos))
            self._muted_from = None

    def drain_reference(self) -> tuple[np.ndarray, float] | None:
        """What was played since the last call and when its first sample was heard.

        For one consumer (the session's listener). Returns None before the first block.
        """
        mark = self.reference_mark
        if mark is None:
            return None
        start = self.reference.read_pos
        out = np.empty(self.reference.available, dtype=np.float32)
        self.reference.read_into(out)
        mark_pos, mark_time = mark
        return out, mark_time + (start - mark_pos) / self.output_rate

    # ----------------------------------------------------------------- readers
    @property
    def played_position(self) -> int:
        """Ring position of the next sample the device will take."""
        return self._ring.read_pos

    def time_of_position(self, position: int) -> float | None:
        """When ring sample `position` reached (or reaches) the speaker, if known."""
        if not self._offset_known:
            return None
        return self._block_time + (position - self._block_start) / self.output_rate

    def response_start(self, response_id: int) -> int | None:
        """Ring position of a response's first sample, while it is still remembered."""
        with self._write_lock:
            for seg in self._segments:
                if seg.response_id == response_id:
                    return seg.start
        return None

    def heard(self, response_id: int, until: int | None = None) -> Heard:
        """What of `response_id` was actually played, e.g. after a barge-in; with `until`,
        only its part before that ring position (a live stream's listening chunks after
        a run keep its id)."""
        played_until = self._ring.read_pos if until is None else min(self._ring.read_pos, until)
        flushes = list(self.flushes)
        with self._write_lock:
            segments = [s for s in self._segments if s.response_id == response_id
                        and (until is None or s.start < until)]
        samples = 0
        complete = 0
        written = end = 0
        texts: list[str] = []
        for seg in segments:
            written += seg.length
            end = max(end, seg.end)
            # A flush that skipped over this segment's start cut it at the skip point.
            cut = played_until
            for cut_at, resumed_at in flushes:
                if cut_at < seg.end and seg.start < resumed_at:
                    cut = min(cut, cut_at)
            played = max(0, min(seg.end, cut) - seg.start)
            samples += played
            if played == seg.length and seg.length > 0:
                complete += 1
                texts.append(seg.text_span)
        return Heard(response_id, samples, complete, "".join(texts), written, end)

    def started_since(self, cursor: int) -> tuple[list[Segment], int]:
        """Chunks whose first sample reached the speaker since ring position `cursor`,
        oldest first, and the cursor to pass next time. Chunks a flush skipped, or a live
        stream's mute covered, never started: they are left out."""
        played = self._ring.read_pos
        if played <= cursor:
            return [], cursor
        skipped = list(self.flushes)
        muted_from = self._muted_from
        with self._write_lock:
            segments = [s for s in self._segments if cursor <= s.start < played]
        started = [
            s for s in segments
            if not any(cut <= s.start < resumed for cut, resumed in skipped)
            and (muted_from is None or s.start < muted_from)
        ]
        return started, played

    def stats(self) -> PlayerStats:
        return PlayerStats(
            underruns=self.underruns,
            underrun_samples=self.underrun_samples,
            dropped_chunks=self._dropped_chunks,
            overflow_samples=self._overflow_samples,
            queued_seconds=self._ring.available / self.output_rate,
        )
