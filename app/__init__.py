"""Duetto: live, full-duplex conversation with an omni model on your own GPU."""

import logging
import os

# oneDNN (torch's CPU kernels) keeps a compiled kernel for every distinct shape it has
# run, up to 1024 by default. A conversation runs attention over a context that is a
# new length at every step, so on a CPU that cache grows by tens of MB over the first
# minutes. Too small a cache costs latency instead (presumably kernels used once per
# answer, such as the vocoder's, are evicted between answers and compiled again).
# Measured on the turn and interruption scenarios (tiny model, 2 cores): turn-taking
# median 0.87 s at 256, 0.82 s at 512, 0.78 s at 1024 (runs vary by about 0.04 s).
# A user's own setting wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")

# bitsandbytes' CPU backend tries to fetch an optional kernel from the model hub at
# import and warns when it cannot; it then uses its built-in path. Users cannot act on
# that warning, so it is kept out of their terminal.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
