"""Which append carries a camera frame: the one whose audio closes one of the model's
units, one frame per unit, so the server pairs each unit's audio with the picture taken
during it.

vLLM-Omni's MiniCPM-o queues the frames it is sent, in order, and gives the next one to
each model unit it builds from the appended audio (one unit of `chunk_period_ms` per
append that completes one). A frame sent with an append that closes no unit would be
given to an earlier unit than it was taken in, and every such frame adds to the lag.
Where its units end: vLLM-Omni 0.30.0 closes every unit at a whole `chunk_period_ms`
of appended audio, the first one included (`DUPLEX_FIRST_UNIT_MS = 1000` in its client;
its model pads the first window to 1035 ms internally, after the frame is bound);
releases before it closed the first unit at 1030 ms (the 1035 ms window aligned down to
whole mel frames). A server that states `first_unit_ms` in its capabilities gets its
own figure.
"""

from __future__ import annotations


class FrameSchedule:
    def __init__(self, unit_ms: int, first_unit_ms: int | None = None) -> None:
        self.unit_ms = unit_ms
        # vLLM-Omni 0.30.0: the first unit is as long as the others (module docstring).
        self.first_unit_ms = first_unit_ms or unit_ms
        self._closed = 0  # model units closed by the audio sent so far

    def boundary_ms(self, unit_index: int) -> int:
        """Appended audio, in ms, that closes model unit `unit_index`."""
        return self.first_unit_ms + unit_index * self.unit_ms

    def closes_unit(self, audio_end_ms: float) -> bool:
        """After an append ending at `audio_end_ms`: does it close a unit (so it carries
        that unit's frame)? Units it skips past (a long append) get no frame."""
        closed = 0
        while audio_end_ms + 0.5 >= self.boundary_ms(self._closed + closed):
            closed += 1
        self._closed += closed
        return closed > 0
