"""Give the C heap's free memory back to the system now and then during a conversation.

Why: a conversation allocates and frees model temporaries of every size, unit after
unit (torch CPU tensors, decoded frames, feature arrays), from more than one thread.
glibc's malloc keeps what is freed inside its arenas for reuse, and as free blocks of
mixed sizes interleave with live ones the resident size creeps up even though the
live data does not: a tiny-model probe of 300 one-second units grew from 527 to
599 MB while what the model kept stayed under 17 MB. `malloc_trim(0)` hands the free
pages back (all arenas, holes included); run every 10 s between units, the same probe
stayed within 12 MB of its first minute, and a trim takes about 3 ms (55 trims, 0.17 s,
in a 10-minute session). Trimming after every unit also kept memory flat but made steps
slower, since the next unit faults its pages in again; so does a fixed mmap threshold.

Other C libraries (musl, macOS, Windows) have no `malloc_trim`; there this does
nothing, which is also what happens if the call fails.

Each trim also notes the resident size just after it. The worker trims between units,
when no model temporaries are alive, so these samples are the memory the session
*keeps*; a sample taken at a random moment also holds whatever the model is computing
(attention over a 24k-token context is tens of MB on a CPU) and swings by 50-100 MB
from one sample to the next. A leak shows in the kept memory; the benchmark gates on it.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections import deque
from collections.abc import Callable

import psutil

from app.malloc_arenas import glibc_function

log = logging.getLogger(__name__)

TRIM_EVERY_SECONDS = 10.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    return glibc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)


class HeapTrimmer:
    """Calls malloc_trim at most every `every` seconds, from whichever thread asks."""

    def __init__(
        self,
        every: float = TRIM_EVERY_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        trim: Callable[[int], int] | bool | None = True,
    ) -> None:
        self.every = every
        self._clock = clock
        # `trim=True` finds the C library's own; tests pass a fake or None.
        self._trim = _load_malloc_trim() if trim is True else (trim or None)
        self._last = clock()
        self.trims = 0
        self.seconds = 0.0  # total time spent trimming (diagnostics)
        # (clock time, resident bytes) just after each trim; an hour of 10 s trims fits.
        self.kept: deque[tuple[float, int]] = deque(maxlen=4096)
        self._process = psutil.Process()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """Trim if `every` seconds have passed since the last trim; True if it did."""
        now = self._clock()
        if self._trim is None or now - self._last < self.every:
            return False
        self._last = now
        started = time.perf_counter()
        try:
            self._trim(0)
        except Exception:  # a foreign libc that misbehaves: stop trying, keep going
            log.exception("malloc_trim failed; no more heap trimming this session")
            self._trim = None
            return False
        self.seconds += time.perf_counter() - started
        self.trims += 1
        self.kept.append((now, self._process.memory_info().rss))
        return True
