"""Hold glibc's malloc to one arena for the whole process, so the heap trims keep it flat.

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
ARENAS = 1


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


def user_chose(environ: Mapping[str, str]) -> bool:
    return "MALLOC_ARENA_MAX" in environ or "arena_max" in environ.get("GLIBC_TUNABLES", "")


def cap_malloc_arenas(
    arenas: int = ARENAS,
    *,
    environ: Mapping[str, str] | None = None,
    mallopt: Callable[[int, int], int] | bool | None = True,
) -> bool:
    """Cap glibc's arenas at `arenas`; True if it did. Call before any thread starts:
    a thread that already has an arena keeps it."""
    if user_chose(os.environ if environ is None else environ):
        return False
    setter = (glibc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
              if mallopt is True else (mallopt or None))
    if setter is None:
        return False
    if setter(M_ARENA_MAX, arenas) != 1:  # mallopt returns 1 on success
        log.warning("mallopt(M_ARENA_MAX, %d) was refused; the heap may grow in long "
                    "conversations", arenas)
        return False
    return True
