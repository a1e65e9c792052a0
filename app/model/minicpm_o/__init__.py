"""MiniCPM-o 4.5: our port of OpenBMB's omni model onto transformers' building blocks.

config.py reads the checkpoint's config.json; model.py holds the module tree, named as the
published checkpoint names its tensors; loader.py reads the 4-shard checkpoint strictly;
tiny.py writes a tiny random checkpoint in the same layout. protocol.py lays out the
duplex token stream (system prefix, 1 s units, the sliding window), duplex.py runs the
model over it unit by unit, backend.py puts it behind the backend contract, and
schedule.py is a test instrument that makes a tiny random model speak on cue.
"""
