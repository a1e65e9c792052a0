"""One model tree built at a time, in the float dtype it asks for.

torch's default dtype is one setting for the whole process, and building a module tree
in a chosen dtype means setting it for the time of the build (transformers'
from_pretrained does so itself). Duetto builds trees from more than one thread: the
window sizes every model's memory plan in the background (a full-size skeleton on the
meta device takes seconds) while a model loads or a tiny one is made. Unguarded, a build
that started in float32 got half its layers in bfloat16 from the other thread's setting
and failed with "mat1 and mat2 must have the same dtype". Every build in this package
goes through `building()`, so they take turns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_LOCK = threading.RLock()


@contextmanager
def building(dtype: torch.dtype | None = None) -> Iterator[None]:
    """Hold the build lock, with torch's default dtype `dtype` (None: as it is) inside;
    the previous default comes back on the way out."""
    with _LOCK:
        previous = torch.get_default_dtype()
        if dtype is not None:
            torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)
