"""Duetto: live, full-duplex conversation with an omni model on your own GPU."""

import logging

# bitsandbytes' CPU backend tries to fetch an optional kernel from the model hub at
# import and warns when it cannot; it then uses its built-in path. Users cannot act on
# that warning, so it is kept out of their terminal.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
