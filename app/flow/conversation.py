"""Putting a conversation together: a backend, devices or files, a player, a session.

The UI, the command line and the benchmarks all start conversations through here, so a
self-check from files runs exactly the code a live conversation runs. Loading a model is
slow (seconds to minutes) and belongs on a background thread; building the session
around a loaded backend is fast.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.capture.base import CaptureError
from app.capture.camera import PreviewCallback
from app.capture.portaudio import load_sounddevice
from app.capture.replay import ReplayClock
from app.capture.sources import audio_source, video_source
from app.flow.burst_kind import load_burst_kind
from app.flow.duplex import DuplexConfig
from app.flow.player import Player
from app.flow.resample import StreamResampler
from app.flow.session import Session, SessionConfig
from app.flow.turn_end import TurnPatience, load_turn_judge
from app.flow.virtual_output import VirtualOutputStream
from app.model import families
from app.model.contract import Backend, ModelSource, Persona, Progress, Quant

log = logging.getLogger(__name__)

NULL_SPEAKER = "null"
VIRTUAL_RATE = 24000
VIRTUAL_BLOCK = 240  # 10 ms: a flush takes effect within this


@dataclass(frozen=True)
class ConversationOptions:
    """Everything a conversation needs, as the user chose it.

    Devices: `mic` None is the default microphone, a number an index, a path an audio
    file replayed as a microphone. `camera` None is camera off, a number an index, a path
    a video file. `standby_camera` is the camera to open if the user switches it on
    mid-conversation after starting with it off (None: no camera to switch on).
    `speaker` None is the default output, "null" plays to nowhere (in real time), a path
    ending in .wav writes what would be played, a number an index.
    `end_of_turn`: the end-of-turn model's patience step (threshold, cap, and the silence
    to fall back on); None: no model, `duplex.end_of_turn_silence` alone decides.
    """

    model: ModelSource
    persona: Persona
    family: str = "qwen2.5-omni"
    quant: Quant = Quant.BF16
    mic: int | str | Path | None = None
    camera: int | str | Path | None = None
    standby_camera: int | str | Path | None = None
    speaker: int | str | Path | None = None
    duplex: DuplexConfig = dataclasses.field(default_factory=DuplexConfig)
    echo_cancellation: bool = True
    record_dir: Path | None = None
    loop_files: bool = False
    unit_ms: int | None = None  # the backend's own default when None
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    end_of_turn: TurnPatience | None = None


def load_backend(options: ConversationOptions, progress: Progress) -> Backend:
    """Build the family's backend and load its weights (slow; not on the UI thread)."""
    family = families.get(options.family)
    backend_class = families.load_object(family.backend)
    kwargs = dict(options.backend_options)
    if options.unit_ms is not None:
        kwargs["unit_ms"] = options.unit_ms
    backend = backend_class(**kwargs)
    try:
        backend.load(options.model, options.quant, progress)
    except BaseException:
        # Failed or cancelled part-way (the progress callback raises to cancel): let go
        # of whatever it holds. Its last references go with the exception; the caller
        # then calls release_memory() so the allocator hands the memory back.
        try:
            backend.close()
        except Exception:
            log.debug("closing a backend that failed to load failed", exc_info=True)
        raise
    return backend


def release_memory() -> None:
    """Give freed model memory back: collect cycles, empty torch's CUDA cache if in use.

    Call after a failed or abandoned load is fully unwound (its exception gone), so
    weights it loaded are garbage and show as free to the user and other programs.
    """
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _is_file(spec: int | str | Path | None) -> bool:
    """A device given as a file to replay (a device lost midway is opened again, a file
    is not: it would fail the same way)."""
    if spec is None or isinstance(spec, int) or str(spec).strip().isdigit():
        return False
    return Path(spec).expanduser().is_file()


def _is_virtual_speaker(spec: int | str | Path | None) -> bool:
    return spec is not None and (
        str(spec) == NULL_SPEAKER or str(spec).lower().endswith(".wav")
    )


def open_output(spec: int | str | Path | None) -> tuple[Player, Any]:
    """A player and the output stream that pulls from it (not started yet)."""
    if _is_virtual_speaker(spec):
        player = Player(VIRTUAL_RATE, resampler_factory=StreamResampler)
        wav = None if str(spec) == NULL_SPEAKER else Path(spec)
        stream = VirtualOutputStream(VIRTUAL_RATE, VIRTUAL_BLOCK, player.callback, wav_path=wav)
        return player, stream
    device = int(spec) if isinstance(spec, str) and spec.isdigit() else spec
    try:
        sd = load_sounddevice()
        info = sd.query_devices(device, "output")
    except Exception as exc:  # PortAudio's own errors ("Error querying device -1"), ValueError
        which = "the default speaker" if device is None else f"the speaker {device!r}"
        raise CaptureError(
            f"{which} could not be opened ({exc}); choose a speaker in Settings → Devices, "
            f"or '{NULL_SPEAKER}' to run without sound"
        ) from exc
    rate = int(info["default_samplerate"])
    player = Player(rate, resampler_factory=StreamResampler)
    stream = sd.OutputStream(
        samplerate=rate,
        blocksize=rate // 100,  # 10 ms blocks: a flush is heard within one of them
        device=device,
        channels=1,
        dtype="float32",
        latency="low",
        callback=player.callback,
    )
    return player, stream


def build_session(
    backend: Backend,
    options: ConversationOptions,
    *,
    preview: PreviewCallback | None = None,
) -> Session:
    """The session around a loaded backend, with its sources attached (not started)."""
    player, output = open_output(options.speaker)
    judge = load_turn_judge(options.end_of_turn)
    duplex = options.duplex
    if options.end_of_turn is not None and judge.detector is None:
        # No model after all: the pause that ends a turn is the patience step's silence,
        # and the judge tells the user why at the first pause.
        duplex = dataclasses.replace(duplex, end_of_turn_silence=options.end_of_turn.silence)
    config = SessionConfig(
        duplex=duplex,
        echo_cancellation=options.echo_cancellation,
        record_dir=options.record_dir,
    )
    session = Session(backend, player, options.persona, config, output=output,
                      turn_judge=judge,
                      burst_kind=load_burst_kind(judge.detector.scorer if judge.detector
                                                 else None))
    clock = ReplayClock(realtime=True)  # file sources share it, like devices share time
    mic_clocks = [clock]

    def open_mic():
        # Reopened after a loss, a microphone must keep the session's rate; a file
        # replays on a fresh clock, as the camera's does below.
        replay = mic_clocks.pop() if mic_clocks else ReplayClock(realtime=True)
        return audio_source(
            options.mic,
            session.timeline,
            clock=replay,
            loop=options.loop_files,
            sample_rate=session.timeline.native_rate,
            on_event=session.on_source_event,
        )

    session.set_microphone_factory(open_mic, reopen=not _is_file(options.mic))
    camera = options.camera if options.camera is not None else options.standby_camera
    if camera is not None:
        # Opened at the start, a file shares the session's replay clock; opened later,
        # it takes a fresh one (below).
        clocks = [clock] if options.camera is not None else []

        def open_camera():
            # A camera switched back on mid-session replays a file from its start on a
            # fresh clock, so its frames are stamped now, not back at the session start.
            replay = clocks.pop() if clocks else ReplayClock(realtime=True)
            return video_source(
                camera,
                session.timeline,
                clock=replay,
                loop=options.loop_files,
                preview=preview,
                on_event=session.on_source_event,
            )

        session.set_video_factory(open_camera, enabled=options.camera is not None,
                                  reopen=not _is_file(camera))
    return session
