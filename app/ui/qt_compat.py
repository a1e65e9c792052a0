"""A guard against a reference-count bug in some PySide6 releases.

PySide6 6.12.0's `SignalInstance.emit()` returns `True` without taking a reference to
it, so every signal emitted from Python takes one reference away from `True`. The app
emits from Python all the time (levels every 40 ms, preview frames, units, text): a
process holds some 40,000 references to `True`, so after about ten minutes of
conversation its count reaches zero and Python aborts ("Fatal Python error:
bool_dealloc"). 6.11.3 and older do not do this.

The same release does it to `None` from every method that returns nothing: each
`painter.setPen()`, `drawEllipse()`, `setObjectName()` takes one reference away from
`None`. One paint of the camera placeholder makes about 30 such calls, so a window that
repaints for a few minutes aborts with "none_dealloc" (found by `duetto bench faults`,
which opens many windows in one process).

`True`, `False` and `None` live as long as the interpreter anyway, so where the bug
shows, the guard gives them a reserve of references no conversation can use up, which
is what Python 3.12 does for every such object ("immortal" objects). It probes the
installed PySide6 once, and changes nothing where it behaves.
"""

from __future__ import annotations

import ctypes
import logging
import sys

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

RESERVE = 1 << 40  # references: a million emits a second would take 35 years to use it
_PROBES = 16


class _Probe(QObject):
    ping = Signal()


def emit_drops_a_reference() -> bool:
    """Whether emitting a signal takes a reference away from `True` (the bug above)."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBES):
        probe.ping.emit()
    return sys.getrefcount(True) <= before - _PROBES // 2


def guard_bool_refcounts() -> bool:
    """Give `True` and `False` a reserve of references if emit() leaks them.

    Returns whether the guard was applied. Only on CPython before 3.12, where the
    reference count is the first field of every object and these two are not immortal.
    """
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if not emit_drops_a_reference():
        return False
    for value in (True, False):
        count = ctypes.c_ssize_t.from_address(id(value))
        if count.value < RESERVE:
            count.value += RESERVE
    log.info("PySide6 emit() leaks references to True: gave True and False a reserve")
    return True


def void_call_drops_a_reference() -> bool:
    """Whether a method that returns nothing takes a reference away from `None`."""
    probe = _Probe()
    before = sys.getrefcount(None)
    for _ in range(_PROBES):
        probe.setObjectName("probe")
    return sys.getrefcount(None) <= before - _PROBES // 2


def guard_none_refcount() -> bool:
    """Give `None` a reserve of references if void calls leak them (see above).

    Returns whether the guard was applied (CPython before 3.12 only, as for bools).
    """
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if not void_call_drops_a_reference():
        return False
    count = ctypes.c_ssize_t.from_address(id(None))
    if count.value < RESERVE:
        count.value += RESERVE
    log.info("PySide6 void methods leak references to None: gave None a reserve")
    return True


def guard_refcounts() -> None:
    """Both guards: what importing app.ui applies."""
    guard_bool_refcounts()
    guard_none_refcount()
