"""How many CPU threads the model may use while a conversation runs.

The session's listener, the audio callbacks and the UI need a core of their own, or
playback stutters and barge-ins are heard late. Torch's intra-op threads compete for the
same cores: on a 2-core machine the tiny model generated speech at a real-time factor of
0.44 with one torch thread and 0.65-0.93 with two (measured with the session's own
benchmark load running beside it). So the model gets every core but one.
"""

from __future__ import annotations

import os


def model_threads(cpu_count: int | None = None) -> int:
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, cores - 1)


def limit_model_threads(threads: int | None = None) -> int:
    """Apply the limit to torch (process-wide); returns the number of threads set."""
    import torch

    wanted = threads if threads is not None else model_threads()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted
