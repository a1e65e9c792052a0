"""Duetto: live, full-duplex conversation with an omni model on your own GPU."""

import logging
import os

# oneDNN (torch's CPU kernels) keeps a compiled kernel for every distinct shape it has
# run, up to 1024 by default. A conversation runs attention over a context that is a
# new length at every step, so on a CPU that cache grows by tens of MB over the first
# minutes: 20 MB more resident memory at the same speed in a 200-unit tiny-model probe
# against a capacity of 256, which still holds every layer's kernels that repeat.
# A user's own setting wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")

# bitsandbytes' CPU backend tries to fetch an optional kernel from the model hub at
# import and warns when it cannot; it then uses its built-in path. Users cannot act on
# that warning, so it is kept out of their terminal.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
