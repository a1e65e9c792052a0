"""A fake backend that only listens: for tests about the session around the model
(what reaches it, devices, recording), not about answers."""

from __future__ import annotations

from collections.abc import Iterator

from app.model.contract import BackendSpec, Control, Decision, Output, Persona, Unit


class ListeningBackend:
    spec = BackendSpec(family="fake", unit_ms=500, audio_in_rate=16000,
                       audio_out_rate=24000, frames_per_unit=1, native_duplex=False)

    def start(self, persona: Persona) -> None:
        pass

    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        return iter([Output(decision=Decision.LISTEN)])

    def interrupt(self) -> None:
        pass

    def heard(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
