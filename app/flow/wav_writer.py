"""A 16-bit PCM WAV file whose header says how much audio it holds after every commit.

A WAV header carries the data size, and most readers (Python's `wave`, sox) trust it: a
file whose header still says 0 frames reads as empty however much audio follows. So the
size is written into the header at each `commit()`, after the audio it counts has been
handed to the operating system: a process killed at any moment leaves a file that every
reader opens, holding everything up to the last commit. libsndfile writes the header only
when its file is closed (its flush does not rewrite it), which is why this is not
soundfile.

The header is the canonical 44 bytes (RIFF, fmt, data) and is written whole in one call,
so a kill between two commits leaves the previous header, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import numpy as np

HEADER_BYTES = 44
SAMPLE_BYTES = 2  # PCM_16
# The RIFF size field is 32 bits: the data must leave room for the rest of the header.
MAX_DATA_BYTES = 0xFFFFFFFF - (HEADER_BYTES - 8)


class WavFull(OSError):
    """The file reached the 4 GiB a WAV header can describe."""


def wav_header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    block_align = channels * SAMPLE_BYTES
    return b"".join((
        b"RIFF", struct.pack("<I", HEADER_BYTES - 8 + data_bytes), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHH", 16, 1, channels, sample_rate,
                             sample_rate * block_align, block_align, 8 * SAMPLE_BYTES),
        b"data", struct.pack("<I", data_bytes),
    ))


def to_pcm16(frames: np.ndarray) -> bytes:
    """float samples in [-1, 1] (clipped beyond) as little-endian 16-bit integers."""
    scaled = np.clip(frames, -1.0, 1.0) * 32767.0
    return np.rint(scaled).astype("<i2").tobytes()


class PcmWavWriter:
    """Writes (frames, channels) float blocks; `commit()` makes them count in the header.

    The file is created exclusively (an existing file is never overwritten) and holds a
    valid, empty header from the start. Not thread-safe: its owner serialises calls.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.channels = channels
        self._file = open(path, "xb")  # noqa: SIM115 - lives with self, closed by close()
        self._data_bytes = 0  # written to the file object
        self._committed_bytes = -1
        try:
            self._file.write(wav_header(sample_rate, channels, 0))
            self.commit()
        except BaseException:
            self._file.close()
            raise

    @property
    def frames(self) -> int:
        return self._data_bytes // (self.channels * SAMPLE_BYTES)

    @property
    def committed_frames(self) -> int:
        return max(0, self._committed_bytes) // (self.channels * SAMPLE_BYTES)

    def write(self, frames: np.ndarray) -> None:
        if frames.ndim != 2 or frames.shape[1] != self.channels:
            raise ValueError(f"expected (frames, {self.channels}) samples, got {frames.shape}")
        data = to_pcm16(frames)
        if self._data_bytes + len(data) > MAX_DATA_BYTES:
            raise WavFull(f"{self.path.name} reached the 4 GiB a WAV file can hold")
        self._file.write(data)
        self._data_bytes += len(data)

    def commit(self, *, sync: bool = True) -> None:
        """Hand the audio to the system, then the header that counts it; `sync` also
        waits for the disk (a power cut then loses nothing committed either)."""
        self._file.flush()
        if self._data_bytes != self._committed_bytes:
            end = self._file.tell()
            self._file.seek(0)
            self._file.write(wav_header(self.sample_rate, self.channels, self._data_bytes))
            self._file.flush()
            self._file.seek(end)
            self._committed_bytes = self._data_bytes
        if sync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self.commit()
        finally:
            self._file.close()

    def abandon(self) -> None:
        """Close after a write failed (a full disk): the header then counts the whole
        frames that did reach the file, or, if even that cannot be written, what the
        last commit counted."""
        if self._file.closed:
            return
        with contextlib.suppress(OSError):
            self._file.close()  # flushes what it can; the rest is dropped
        block = self.channels * SAMPLE_BYTES
        try:
            on_disk = self.path.stat().st_size - HEADER_BYTES
            counted = max(0, min(self._data_bytes, on_disk)) // block * block
            if counted != self._committed_bytes:
                with open(self.path, "r+b") as patch:
                    patch.write(wav_header(self.sample_rate, self.channels, counted))
                self._committed_bytes = counted
        except OSError:
            pass  # the last commit's header stands
