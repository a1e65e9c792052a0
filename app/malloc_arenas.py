"""Hold glibc's malloc to one arena and large blocks to mmap, so the heap trims keep it flat.

Why: glibc gives a thread its own arena (a separate heap) when it meets another thread
inside malloc, up to 8 per core. In a conversation the model worker, the capture
threads, the player and Qt all allocate, and the arenas each keep their own free
blocks. app/flow/heap.py's `malloc_trim` hands free pages back, but what interleaves
with live blocks in the extra arenas stays: a 60-minute soak on a 2-core machine kept
+73 MB by its end, and a sample of /proc/self/smaps every 30 s put all of the growth in
those per-thread heaps (the main heap and the libraries stayed flat). Eight-minute
pairs with the camera on grew +20.2 MB with the default and +12.6 MB with one arena;
with the camera off +8.8 and +3.8 MB.

The cost is contention: every thread takes the one arena's lock. Our threads allocate
little between the model's steps (torch's large tensors come from mmap, outside any
arena), so the lock is rarely met; on a GPU the model's memory is not malloc's at all.

Large blocks stay with mmap. glibc serves a block over its mmap threshold (128 KiB) from
mmap and gives it back whole when freed, but by default it raises the threshold to the
size of each such block freed (up to 32 MiB), and from then on serves blocks that size
from the heap. The model's temporaries grow with the context (attention over the
conversation so far: megabytes a pass on the tiny model at 25k tokens), so the heap's
high-water mark rose with the context, and what was freed in it stayed as holes between
live blocks: the soak kept +20 MB by minute 28, its tensors flat (the caches are
reserved up front) and the growth in the heap's free space. Setting the threshold fixes
it at 128 KiB (glibc's own default) and turns the raising off; a block that size costs a
page-mapping call instead of a heap split, far below a model step.

The environment wins: a user who sets MALLOC_ARENA_MAX (or glibc.malloc.arena_max in
GLIBC_TUNABLES) keeps that choice. Other C libraries have no arenas and no `mallopt`;
there this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
ARENAS = 1
MMAP_THRESHOLD = 128 * 1024


def glibc_function(name: str, argtypes: list[Any], restype: Any) -> Any | None:
    """glibc's function `name`, typed; None where there is no glibc (no C library found,
    or another one: musl has a `mallopt` that does nothing, and no `malloc_trim`)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        libc = ctypes.CDLL(library)
        libc.malloc_trim  # noqa: B018 - glibc's own: the mark of glibc
        function = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = restype
    return function


def user_chose(environ: Mapping[str, str], variable: str = "MALLOC_ARENA_MAX",
               tunable: str = "arena_max") -> bool:
    return variable in environ or tunable in environ.get("GLIBC_TUNABLES", "")


def cap_malloc_arenas(
    arenas: int = ARENAS,
    *,
    environ: Mapping[str, str] | None = None,
    mallopt: Callable[[int, int], int] | bool | None = True,
) -> bool:
    """Cap glibc's arenas at `arenas` and fix its mmap threshold (module docstring);
    True if the arenas were capped. Call before any thread starts: a thread that already
    has an arena keeps it. Each setting the user made in the environment is kept."""
    environ = os.environ if environ is None else environ
    setter = (glibc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
              if mallopt is True else (mallopt or None))
    if setter is None:
        return False
    if not user_chose(environ, "MALLOC_MMAP_THRESHOLD_", "mmap_threshold") and setter(
            M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:  # mallopt returns 1 on success
        log.warning("mallopt(M_MMAP_THRESHOLD) was refused; the heap may grow with the "
                    "conversation's context")
    if user_chose(environ):
        return False
    if setter(M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) was refused; the heap may grow in long "
                    "conversations", arenas)
        return False
    return True
