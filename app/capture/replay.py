"""The clock that file sources replay against, shared by a session's audio and video.

Real time (`realtime=True`): the first source to start fixes an origin on
time.monotonic(); media time t is delivered at origin + t and stamped with it, so a
video file and a WAV started a few milliseconds apart still line up, just as a camera
and a microphone would.

As fast as possible (`realtime=False`): nothing waits, and capture times are media
times on a virtual axis that starts at 0.0 (see sinks.py), the same for every source
sharing the clock.
"""

from __future__ import annotations

import threading
import time


class ReplayClock:
    def __init__(self, realtime: bool = True) -> None:
        self.realtime = realtime
        self._lock = threading.Lock()
        self._origin: float | None = None

    def origin(self) -> float:
        """Where media time 0.0 lies: fixed by the first caller, then shared."""
        if not self.realtime:
            return 0.0
        with self._lock:
            if self._origin is None:
                self._origin = time.monotonic()
            return self._origin

    def wait_until(self, media_time: float, stop: threading.Event) -> float | None:
        """Wait until `media_time` is due; its capture time, or None if `stop` was set.

        Sleeping on the stop event (not time.sleep) is what lets stop() end a paced
        replay at once rather than after the next frame is due.
        """
        capture_time = self.origin() + media_time
        if self.realtime:
            delay = capture_time - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return None
        if stop.is_set():
            return None
        return capture_time
