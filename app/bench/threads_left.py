"""Which threads something left running after it was closed.

Snapshot `threading.enumerate()` before, then ask after closing: threads still ending
get a grace period. Threads a library starts once per process and keeps on purpose are
not counted: tqdm's monitor (transformers' loading progress bar) lives until the
process exits, whatever was loaded.
"""

from __future__ import annotations

import threading
import time

PROCESS_THREADS = frozenset({"tqdm_monitor"})


def threads_left(before: set[threading.Thread], grace_s: float = 5.0) -> list[str]:
    """Names of threads started since `before` that are still alive after `grace_s`."""
    deadline = time.monotonic() + grace_s
    while True:
        left = [t for t in threading.enumerate()
                if t not in before and t.is_alive() and t.name not in PROCESS_THREADS]
        if not left or time.monotonic() > deadline:
            return sorted(t.name for t in left)
        time.sleep(0.1)
