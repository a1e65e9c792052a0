"""Crash-safe session recording: a stereo WAV and a JSON-lines event log.

Left is the user's microphone, right is what the assistant played, sample-aligned on
the session clock: each write says where on that clock its first sample lies, and the
recorder places it there (padding a gap with silence), so two streams that arrive at
different moments still line up.

What a crash keeps. Every `commit_interval` (0.5 s) of wall time the audio is handed
to the operating system and the WAV header rewritten to count it (wav_writer.py), so
after kill -9 every reader (Python's `wave`, sox, libsndfile) opens the file and finds
all but the last moments: at most `commit_interval` of what was written, plus what one
channel held waiting for the other (`stall_seconds` when the other has stopped; see
SessionRecorder). Every `sync_interval` (1 s) both files are also synced to the disk,
which a power cut needs; that waits for the disk, on the listener's thread, so it is
done once a second rather than at every commit. An ordinary exit, a SIGTERM turned into
one (app/termination.py) included, finalizes every recorder still open.

Faults. A folder that cannot be made or written, or a write that fails later (a full
disk), never stops the conversation: `open_recorder` returns no recorder and a sentence
to show; a recorder whose write fails keeps what reached the disk, closes, and reports a
sentence through `on_failure` once. Folders are unique: two sessions started in the same
second (two instances) get `<stamp>` and `<stamp>-2`, each made exclusively.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.flow.wav_writer import PcmWavWriter

log = logging.getLogger(__name__)

WAV_NAME = "conversation.wav"
LOG_NAME = "events.jsonl"
STAMP_FORMAT = "%Y%m%d-%H%M%S"
MAX_FOLDER_TRIES = 1000


class _PositionedChannel:
    """Samples of one channel not yet written, starting at a known clock position."""

    def __init__(self) -> None:
        self.start = 0  # clock position (samples) of pending[0]
        self.pending = np.zeros(0, dtype=np.float32)
        self.late_samples = 0  # arrived for positions already written: dropped, counted
        self.last_put = 0.0  # wall time (the recorder's clock) of the latest write

    @property
    def end(self) -> int:
        return self.start + len(self.pending)

    def put(self, position: int, samples: np.ndarray) -> None:
        if position < self.start:  # the recording has moved past this already
            skip = min(len(samples), self.start - position)
            self.late_samples += skip
            samples = samples[skip:]
            position = self.start
        if position > self.end:
            self.pending = np.concatenate(
                [self.pending, np.zeros(position - self.end, np.float32)]
            )
        offset = position - self.start
        needed = offset + len(samples)
        if needed > len(self.pending):
            self.pending = np.concatenate(
                [self.pending, np.zeros(needed - len(self.pending), np.float32)]
            )
        self.pending[offset:needed] = samples

    def take(self, upto: int) -> np.ndarray:
        """Remove and return positions [start, upto), silence where nothing arrived."""
        n = upto - self.start
        out = np.zeros(n, dtype=np.float32)
        have = min(n, len(self.pending))
        out[:have] = self.pending[:have]
        self.pending = self.pending[have:]
        self.start = upto
        return out


def _why(exc: OSError) -> str:
    """A write failure in a user's words."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the recordings folder cannot be written"
    if exc.errno == errno.EFBIG:
        return "the file reached the largest size this system allows"
    return exc.strerror or str(exc)


def unique_folder(parent: Path, stamp: str | None = None) -> Path:
    """Make and return a new folder `<parent>/<stamp>`, or `<stamp>-2`, `-3`, ...

    Each try is an exclusive mkdir, so two sessions (two instances) starting in the same
    second never share a folder. OSError if the parent cannot be made or written.
    """
    stamp = stamp or time.strftime(STAMP_FORMAT)
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_FOLDER_TRIES + 1):
        folder = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(errno.EEXIST, f"{MAX_FOLDER_TRIES} recordings named {stamp} exist",
                          str(parent))


class SessionRecorder:
    """Writes `<folder>/conversation.wav` and `<folder>/events.jsonl` as the session runs.

    One channel running ahead of the other is held in memory until the other catches up,
    so the two stay aligned. When the other has received nothing for `stall_seconds` of
    wall time (a stopped player, a mic that is gone), the one ahead is written alone, the
    other's part as silence; `max_lag_seconds` bounds what is held whatever happens.
    Audio arriving for positions already written is dropped and counted (`late_samples`).

    `folder` must exist or be creatable; the files in it must not exist yet. After a
    write fails, the recorder is closed, `failure` says why, and `on_failure` is called
    once with that sentence (outside the recorder's lock, on the writing thread).
    """

    def __init__(
        self,
        folder: Path,
        sample_rate: int = 24000,
        *,
        commit_interval: float = 0.5,
        sync_interval: float = 1.0,
        stall_seconds: float = 0.5,
        max_lag_seconds: float = 30.0,
        on_failure: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.sample_rate = sample_rate
        self.wav_path = folder / WAV_NAME
        self.log_path = folder / LOG_NAME
        self._wav = PcmWavWriter(self.wav_path, sample_rate, channels=2)
        try:
            self._log = open(self.log_path, "x", encoding="utf-8")  # noqa: SIM115 - lives with self
        except BaseException:
            self._wav.abandon()
            raise
        self._lock = threading.Lock()
        self._clock = clock
        self._user = _PositionedChannel()
        self._assistant = _PositionedChannel()
        self._user.last_put = self._assistant.last_put = clock()
        self._written = 0
        self._commit_interval = commit_interval
        self._sync_interval = sync_interval
        self._last_commit = self._last_sync = clock()
        self._stall = stall_seconds
        self._max_lag = int(max_lag_seconds * sample_rate)
        self._on_failure = on_failure
        self._closed = False
        self.failure: str | None = None
        _open_recorders.add(self)

    @property
    def seconds_written(self) -> float:
        return self._written / self.sample_rate

    @property
    def seconds_committed(self) -> float:
        """What a reader of the WAV finds now, even if this process died this instant."""
        return self._wav.committed_frames / self.sample_rate

    # Writers give the session-clock time of their first sample, in seconds.
    def write_user(self, samples: np.ndarray, t: float) -> None:
        self._put(self._user, self._assistant, samples, t)

    def write_assistant(self, samples: np.ndarray, t: float) -> None:
        self._put(self._assistant, self._user, samples, t)

    def event(self, kind: str, t: float, /, **fields: Any) -> None:
        """One line of the log: what happened, when on the session clock, details."""
        record = {"t": round(t, 6), "event": kind, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            if self._closed:
                return
            try:
                self._log.write(line + "\n")
                self._maybe_commit()
            except OSError as exc:
                failure = self._fail(exc)
            else:
                return
        self._report(failure)

    def _put(
        self, channel: _PositionedChannel, other: _PositionedChannel, samples: np.ndarray,
        t: float,
    ) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        position = round(t * self.sample_rate)
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            channel.put(position, samples)
            channel.last_put = now
            upto = min(channel.end, other.end)
            if channel.end > other.end:
                if now - other.last_put >= self._stall:
                    upto = channel.end  # the other has stopped: do not wait for it
                else:
                    upto = max(upto, channel.end - self._max_lag)
            try:
                if upto > self._written:
                    self._write_upto(upto)
                self._maybe_commit()
            except OSError as exc:
                failure = self._fail(exc)
            else:
                return
        self._report(failure)

    def _write_upto(self, upto: int) -> None:
        left = self._user.take(upto)
        right = self._assistant.take(upto)
        self._wav.write(np.stack([left, right], axis=1))
        self._written = upto

    def _maybe_commit(self) -> None:
        now = self._clock()
        if now - self._last_commit >= self._commit_interval:
            sync = now - self._last_sync >= self._sync_interval
            self._commit(sync=sync)
            self._last_commit = now
            if sync:
                self._last_sync = now

    def _commit(self, *, sync: bool = True) -> None:
        self._wav.commit(sync=sync)  # the header counts the frames written (wav_writer.py)
        self._log.flush()
        if sync:
            os.fsync(self._log.fileno())

    def _fail(self, exc: OSError) -> str:
        """Under the lock: stop recording, keep what reached the disk, say so."""
        self._closed = True
        self._wav.abandon()
        try:
            self._log.close()
        except OSError:
            log.debug("closing the event log after a failed write failed", exc_info=True)
        _open_recorders.discard(self)
        kept = self._wav.committed_frames / self.sample_rate
        self.failure = (
            f"Recording stopped: {_why(exc)} ({exc.filename or self.folder}). The "
            f"conversation goes on without recording; the {kept:.1f} s recorded until "
            f"then are kept in {self.folder}. Free some space or choose another "
            "recordings folder in Settings → Conversation."
        )
        log.warning("%s", self.failure, exc_info=exc)
        return self.failure

    def _report(self, failure: str) -> None:
        callback, self._on_failure = self._on_failure, None  # once
        if callback is not None:
            try:
                callback(failure)
            except Exception:
                log.exception("the recording failure callback failed")

    @property
    def late_samples(self) -> int:
        return self._user.late_samples + self._assistant.late_samples

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Write what is held, finalize the header and close (safe to call again)."""
        with self._lock:
            if self._closed:
                return
            try:
                end = max(self._user.end, self._assistant.end)
                if end > self._written:
                    self._write_upto(end)
                self._commit()
                self._wav.close()
                self._log.close()
            except OSError as exc:
                failure = self._fail(exc)
            else:
                self._closed = True
                _open_recorders.discard(self)
                return
        self._report(failure)


# Recorders not yet closed, finalized at interpreter exit (an uncaught exception, a
# SystemExit from a signal handler): their headers then count everything written.
_open_recorders: weakref.WeakSet[SessionRecorder] = weakref.WeakSet()


@atexit.register
def _close_open_recorders() -> None:
    for recorder in list(_open_recorders):
        try:
            recorder.close()
        except Exception:  # exiting anyway: keep closing the others
            log.exception("finalizing a recording at exit failed")


def open_recorder(
    parent: Path,
    sample_rate: int = 24000,
    *,
    on_failure: Callable[[str], None] | None = None,
    **options: Any,
) -> tuple[SessionRecorder | None, str]:
    """A recorder in a new folder under `parent`, or None and the sentence saying why.

    Never raises for a folder that cannot be made or written: the caller goes on without
    recording and shows the sentence.
    """
    try:
        folder = unique_folder(parent)
        return SessionRecorder(folder, sample_rate, on_failure=on_failure, **options), ""
    except OSError as exc:
        log.warning("recording could not start in %s", parent, exc_info=True)
        return None, (
            f"Recording is off for this conversation: {_why(exc)} ({exc.filename or parent}). "
            "The conversation goes on; choose another recordings folder in Settings → "
            "Conversation."
        )


def read_events(path: Path) -> list[dict[str, Any]]:
    """The log's events; a torn last line (the process died mid-write) is skipped."""
    events = []
    with open(path, encoding="utf-8") as log:
        for line in log:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events
