"""The app holds glibc's malloc to one arena (app/malloc_arenas.py).

Checked in a child process through glibc's own report (`malloc_info` lists one <heap>
per arena): threads that meet inside malloc get arenas of their own unless capped.
"""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from app.malloc_arenas import (
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    MMAP_THRESHOLD,
    cap_malloc_arenas,
    user_chose,
)

# Eight threads allocating and freeing at once, then glibc's XML report to stdout.
CHILD = r"""
import ctypes, ctypes.util, sys, threading
from app.malloc_arenas import cap_malloc_arenas
if sys.argv[1] == "cap":
    assert cap_malloc_arenas(environ={})
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.fdopen.restype = ctypes.c_void_p
go = threading.Barrier(8)
def churn():
    go.wait()
    for _ in range(20000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
stdout = libc.fdopen(1, b"w")
libc.malloc_info(0, ctypes.c_void_p(stdout))
libc.fflush(ctypes.c_void_p(stdout))
"""


def _arenas(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_ARENA_MAX from the caller's shell
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True,
                         text=True, env=env, timeout=60, check=True).stdout
    return out.count("<heap nr=")


glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
    reason="glibc's arenas are a Linux matter")


@glibc
def test_threads_share_one_arena_once_capped() -> None:
    assert _arenas("free") > 1, "the probe should make glibc open more arenas uncapped"
    assert _arenas("cap") == 1


def test_the_users_own_choice_is_kept() -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(option: int, value: int) -> int:
        calls.append((option, value))
        return 1

    assert not cap_malloc_arenas(environ={"MALLOC_ARENA_MAX": "4",
                                          "MALLOC_MMAP_THRESHOLD_": "65536"},
                                 mallopt=mallopt)
    assert not cap_malloc_arenas(
        environ={"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1"},
        mallopt=mallopt)
    assert calls == []
    assert not cap_malloc_arenas(environ={"MALLOC_ARENA_MAX": "4"}, mallopt=mallopt)
    assert calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD)]
    calls.clear()
    assert cap_malloc_arenas(environ={}, mallopt=mallopt)
    assert calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_ARENA_MAX, 1)]
    assert user_chose({"MALLOC_ARENA_MAX": "1"})


def test_a_refused_or_missing_mallopt_is_harmless() -> None:
    assert not cap_malloc_arenas(environ={}, mallopt=lambda option, value: 0)
    assert not cap_malloc_arenas(environ={}, mallopt=None)


# A 4 MiB block freed, then a 2 MiB one: does the second come from the heap (the
# threshold raised to 4 MiB by the free) or from mmap? glibc's mallinfo2 says.
LARGE_CHILD = r"""
import ctypes, ctypes.util, sys
from app.malloc_arenas import cap_malloc_arenas
if sys.argv[1] == "cap":
    assert cap_malloc_arenas(environ={})
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Info
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(2 << 20)
print(libc.mallinfo2().hblks - before)
"""


@glibc
def test_large_blocks_stay_with_mmap_once_the_threshold_is_fixed() -> None:
    """What grew the soak's heap with the context (module docstring of malloc_arenas)."""
    def mapped(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", LARGE_CHILD, mode], capture_output=True,
                             text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60, check=True)
        return int(out.stdout)

    assert mapped("free") == 0, "glibc should serve it from the heap after the larger free"
    assert mapped("cap") == 1
