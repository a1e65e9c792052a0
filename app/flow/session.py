"""The session: one conversation, from the microphone and camera to the speaker.

Two threads, so that listening never waits for the model:

* The listener cuts short ticks (40 ms) from the timeline. For each tick it drains what
  the speaker played (the far end), cancels the echo, runs voice activity, advances the
  duplex controller and carries out its actions at once (pause, flush, interrupt), writes
  the recording, measures latencies, and gathers ticks into the backend's units.
* The model worker takes units from a short queue, calls `backend.step()` and hands the
  speech it yields to the player. After a barge-in it tells the backend what was heard.

The worker talks back to the listener only through an inbox (a deque); the duplex
controller is touched by the listener alone.

A native-duplex model (Moshi every 80 ms frame, MiniCPM-o every 1 s unit) answers every
unit, with speech or with silence (a unit that brings no speech at all, as MiniCPM-o's
text-only output until its speech path lands, gets silence in its place: native.py).
Its output is one live stream for the player (one cushion, no per-frame ends), and the
controller hears only where its runs of speech start and end (native.py), each as it
reaches the speaker. After a barge-in the model is muted (every
unit says so) while the user holds the floor, and released when they finish.

A slow backend makes the queue grow: past `max_pending_units` the frames of queued units
are dropped (and counted), never audio, and the lag between a unit's end and its prefill
is reported with every unit.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.capture.silence import SilenceSource
from app.flow import exit_guard
from app.flow.answer_pace import pace_of
from app.flow.burst_kind import BurstKind
from app.flow.cpu import limit_model_threads
from app.flow.device_keeper import DeviceKeeper
from app.flow.duplex import Action, DuplexConfig, DuplexController, DuplexState
from app.flow.echo import EchoCanceller, EchoPathMonitor
from app.flow.events import EventHub, EventKind, Subscriber
from app.flow.farend import FarEnd
from app.flow.heap import HeapTrimmer
from app.flow.metrics import SessionMetrics
from app.flow.native import RunReader, StandIn
from app.flow.played import PlayedReporter
from app.flow.player import Player
from app.flow.recording import SessionRecorder
from app.flow.resample import StreamResampler
from app.flow.session_recording import SessionRecording
from app.flow.spoken import SpokenText
from app.flow.stall import StallWatch
from app.flow.timeline import OverflowEvent, Timeline
from app.flow.turn_end import TurnJudge
from app.flow.turn_judging import TurnJudging
from app.flow.unit_builder import MIN_FINAL_UNIT_SECONDS, UnitBuilder
from app.flow.vad import VadKind, VoiceActivity
from app.model.contract import Backend, Control, Decision, Output, Persona, Unit

log = logging.getLogger(__name__)

VAD_RATE = 16000  # silero-vad's rate
# The echo canceller's rates; ticks are cut at the backend's rate when it is one of them
# (no resampling on the model's path), else at 48 kHz, which keeps the whole band.
ECHO_RATES = (16000, 32000, 48000)


def _tick_rate(backend_rate: int) -> int:
    return backend_rate if backend_rate in ECHO_RATES else 48000


class Source(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout_s: float | None = None) -> bool: ...


class OutputStream(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class SessionConfig:
    tick_seconds: float = 0.02  # a barge-in is acted on within one tick
    duplex: DuplexConfig = dataclasses.field(default_factory=DuplexConfig)
    echo_cancellation: bool = True
    record_dir: Path | None = None
    recording_rate: int = 24000
    max_pending_units: int = 3
    audio_capacity_seconds: float = 30.0
    skip_silent_units_while_speaking: bool = True
    levels_every_ticks: int = 2
    frame_max_age: float = 1.0
    model_threads: int | None = None  # torch threads; None: every core but one (cpu.py)


def _dbfs(samples: np.ndarray) -> float:
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(-120.0, 20.0 * np.log10(rms + 1e-12))


@dataclass
class _Work:
    unit: Unit | None  # None for a retraction
    control: Control
    # Set when a prepared answer is dropped: its audio must not reach the player.
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    response: int | None = None  # the answer's id once the worker has one

    @property
    def retraction(self) -> bool:
        return self.unit is None


class Session:
    """One conversation. Build it, attach sources, `start()`, later `stop()`.

    Thread-safe for callers: `force_listen()`, `set_mic_muted()`, `stop()`.
    """

    def __init__(
        self,
        backend: Backend,
        player: Player,
        persona: Persona,
        config: SessionConfig | None = None,
        *,
        output: OutputStream | None = None,
        vad: VoiceActivity | None = None,
        turn_judge: TurnJudge | None = None,
        burst_kind: BurstKind | None = None,
    ) -> None:
        self.backend = backend
        self.player = player
        self.persona = persona
        self.config = config or SessionConfig()
        self.output = output
        spec = backend.spec
        self.backend_rate = spec.audio_in_rate
        self.tick_rate = _tick_rate(self.backend_rate)
        self._to_vad = StreamResampler(self.tick_rate, VAD_RATE)
        self._to_backend = StreamResampler(self.tick_rate, self.backend_rate)
        self.events = EventHub()
        self.metrics = SessionMetrics()
        self.heap = HeapTrimmer()
        self.stall = StallWatch()  # an answer that stops mid-way is explained (stall.py)
        self._played_seen = 0  # the player's position at the last stall check
        self.timeline = Timeline(
            self.config.tick_seconds,
            self.tick_rate,
            frames_per_unit=max(1, spec.frames_per_unit),
            audio_capacity_seconds=self.config.audio_capacity_seconds,
            # A camera that stopped (switched off, unplugged) must not leave its last
            # picture in every later unit.
            frame_max_age=self.config.frame_max_age,
            on_overflow=self._on_overflow,
        )
        self.controller = DuplexController(self.config.duplex, native_duplex=spec.native_duplex,
                                           judge_bursts=burst_kind is not None)
        self.native = spec.native_duplex
        player.suit(spec, pace_of(backend))  # a native model's: one steady stream
        self._runs = RunReader()  # worker side: a native model's runs of speech
        self._spoken = SpokenText(player)  # listener side: words as they are heard
        self._played = PlayedReporter(backend, player)  # polled by the listener: played.py
        self._response_end: int | None = None  # native: ring position where it ended
        self._holding_model = False  # native: muted while the user holds the floor
        self.vad = vad or VoiceActivity()
        # The end-of-turn model (turn_end.py), asked when the controller says JUDGE_TURN
        # (on a thread of its own where the cores allow, turn_judging.py), and the word
        # classifier for short utterances (burst_kind.py), asked on JUDGE_BURST; both
        # hear what voice activity hears.
        self.turn_judge = turn_judge or TurnJudge(None)
        self.turn_judging = TurnJudging(self.turn_judge, self.events,
                                        self.config.duplex.end_of_turn_silence,
                                        burst_kind=burst_kind)
        self.echo = EchoCanceller(self.tick_rate, enabled=self.config.echo_cancellation)
        self.echo_path = EchoPathMonitor(block_ticks=max(1, round(0.24 / self.config.tick_seconds)))
        self._far_tick = np.zeros(0, dtype=np.float32)  # what played during the last tick
        self.far_end = FarEnd(
            player.drain_reference,
            player.output_rate,
            self._session_time_of,
            echo_rate=self.tick_rate,
            record_rate=self.config.recording_rate,
        )
        self.recording = SessionRecording(self.events, self.tick_rate,
                                          self.config.recording_rate)
        self._units = UnitBuilder(spec.unit_ms / 1000.0, self.backend_rate)
        self._held_unit: Unit | None = None  # a silent unit kept in case speech follows
        self._speculation: _Work | None = None  # the turn's end, sent early (see duplex.py)
        self._after_speculation: list[Unit] = []  # units cut while it was pending
        self.retractions = 0
        self._sources: list[Source] = []
        # Devices opened through a factory come back by themselves after a loss.
        self._microphone: DeviceKeeper | None = None
        self._camera: DeviceKeeper | None = None
        self._queue: collections.deque[_Work] = collections.deque()
        self._queue_cond = threading.Condition()
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._muted = False
        self._force_listen = threading.Event()
        self._now = 0.0  # session time the listener has processed up to
        self._ticks = 0
        self._last_offset_t = 0.0
        self._after_interruption = False
        # The response on the air, as the listener sees it.
        self._response: int | None = None
        self._response_done = False
        self._first_audio_pending: int | None = None
        self._interrupted: set[int] = set()  # answers cut by a barge-in (listener adds)
        self._generated: set[int] = set()  # answers the model finished or stopped (worker)
        self._reported: set[int] = set()  # answers whose heard() was called (worker)
        self._interrupt_lock = threading.Lock()
        # Barge-ins so far. The worker notes it when a step begins: a barge-in during the
        # step cuts that step's answer even if the listener has not yet read its id.
        self._barge_ins = 0
        self._silenced_seen = 0
        self._stop_from: float | None = None  # onset time of a barge-in awaiting silence
        self._silent_at: float | None = None  # when a pause at that onset silenced output
        self.dropped_frames = 0
        self.ended_reason = ""
        self._history_seen = 0  # controller transitions already reported
        # Called with each tick as heard and as echo-cancelled, and its session time
        # (meters, diagnostics, the echo tests).
        self.cleaned_tap: Callable[[np.ndarray, np.ndarray, float], None] | None = None
        self._assistant_level = -120.0

    # ------------------------------------------------------------------ wiring
    def attach(self, source: Source) -> None:
        """A capture source built with `self.timeline` as its sink."""
        self._sources.append(source)

    def set_microphone_factory(self, factory: Callable[[], Source], *,
                               reopen: bool = True) -> None:
        """How to open (and, after a loss, reopen unless `reopen` is False: a file) the
        microphone; started with the session. While it is away the session hears
        silence (device_keeper.py)."""
        self._microphone = DeviceKeeper(
            "microphone", factory, self._device_news, reopen=reopen, stand_in=self._silence
        )

    def set_video_factory(self, factory: Callable[[], Source], *, enabled: bool = True,
                          reopen: bool = True) -> None:
        """How to (re)open the camera: the session starts it, and can switch it off/on.

        `enabled=False` keeps the camera off until `set_camera_enabled(True)`; a lost
        camera is opened again when it is back, unless `reopen` is False (a file).
        """
        self._camera = DeviceKeeper("camera", factory, self._device_news, wanted=enabled,
                                    reopen=reopen)

    def set_camera_enabled(self, enabled: bool) -> bool:
        """Switch the camera off (the device is released) or on again mid-conversation.

        Returns whether the camera is now on. The model keeps its context: units simply
        carry no frames while the camera is off. Opening a camera can take seconds: call
        this off any UI thread. A camera that cannot open raises CaptureError and stays
        off; one that was lost comes back by itself when it can, and switching it on
        tries at once.
        """
        if self._camera is None:
            return False
        return self._camera.switch(enabled)

    def _device_news(self, source: str, kind: str, message: str) -> None:
        self.events.emit(EventKind.DEVICE, self._now, source=source, kind=kind, message=message)

    def _silence(self) -> Source:
        return SilenceSource(self.timeline, self.timeline.native_rate or self.tick_rate)

    def subscribe(self, subscriber: Subscriber):
        return self.events.subscribe(subscriber)

    def on_source_event(self, event: Any) -> None:
        """Pass as the capture sources' `on_event`: device news becomes session events."""
        self.events.emit(
            EventKind.DEVICE,
            self._now,
            source=event.source,
            kind=str(event.kind),
            message=event.message,
        )

    def _session_time_of(self, monotonic_time: float) -> float | None:
        return self.timeline.session_time(monotonic_time)

    def _on_overflow(self, event: OverflowEvent) -> None:
        self.events.emit(EventKind.OVERFLOW, event.lost_to, description=event.describe())

    # ------------------------------------------------------------------ control
    @property
    def recorder(self) -> SessionRecorder | None:
        return self.recording.recorder

    def start(self) -> None:
        if self.config.record_dir is not None:
            self.recording.start(self.config.record_dir)
        limit_model_threads(self.config.model_threads)
        self.backend.start(self.persona)
        self._emit_state("session started")
        exit_guard.track(self)  # a process exiting mid-conversation ends it first
        self._worker = threading.Thread(target=self._work_loop, name="session-model", daemon=True)
        self._listener = threading.Thread(
            target=self._listen_loop, name="session-listener", daemon=True
        )
        self._worker.start()
        self._listener.start()
        if self.output is not None:
            self.output.start()
        for source in list(self._sources):
            source.start()
        if self._microphone is not None:
            self._microphone.start()  # no microphone, no conversation: the caller says why
        if self._camera is not None:
            try:
                self._camera.start()
            except Exception as exc:
                # A camera that will not open leaves the conversation without video, not
                # without a conversation; the user is told and can switch it on again.
                self._camera_failed(exc)

    def _camera_failed(self, exc: Exception) -> None:
        log.info("the camera could not start: %s", exc)
        self.events.emit(EventKind.DEVICE, self._now, source="camera", kind="failed",
                         message=f"the camera could not start ({exc})")

    def stop(self, reason: str = "stopped") -> None:
        if self._stop.is_set():
            return
        self.ended_reason = reason
        for keeper in (self._microphone, self._camera):
            if keeper is not None:  # a device opening now closes itself once open
                keeper.stop()
        for source in list(self._sources):
            try:
                source.stop()
            except Exception:
                log.exception("stopping a source failed")
        self.timeline.close()
        self._stop.set()
        self.backend.interrupt()
        with self._queue_cond:
            self._queue_cond.notify_all()
        for thread in (self._listener, self._worker):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)
        self.turn_judging.close()
        if self.output is not None:
            self.output.stop()
        self.metrics.underruns = self.player.underruns
        self.metrics.quiet_gaps = self.player.quiet_gaps
        self.metrics.dropped_frames = self.dropped_frames + self.timeline.stats().frames_dropped
        self.events.emit(EventKind.ENDED, self._now, reason=reason, metrics=self.metrics.summary())
        self.recording.close()
        exit_guard.untrack(self)

    def force_listen(self) -> None:
        """The user asked the assistant to stop talking (a button, a shortcut)."""
        self._force_listen.set()

    def set_mic_muted(self, muted: bool) -> None:
        self._muted = muted

    # ------------------------------------------------------------------ listener
    def _listen_loop(self) -> None:
        try:
            while not self._stop.is_set():
                tick = self.timeline.wait_unit(timeout=0.1)
                if tick is None:
                    self._drain_inbox()
                    self._check_playback()
                    continue
                self._process_tick(tick)
        except Exception as exc:  # the conversation cannot go on; say why
            log.exception("session listener failed")
            self.events.emit(EventKind.ERROR, self._now, message=f"listening failed: {exc}")

    def _process_tick(self, tick: Unit) -> None:
        mic = np.zeros_like(tick.audio) if self._muted else tick.audio
        self.recording.user(mic, tick.start)
        self._far_tick = np.zeros(0, dtype=np.float32)
        self._feed_far_end()
        cleaned = self.echo.process_near(mic, tick.start)
        self.echo_path.update(self._far_tick, mic)
        listened = self._listening_signal(mic, cleaned)
        if self.cleaned_tap is not None:
            self.cleaned_tap(mic, cleaned, tick.start)
        self._now = tick.end
        heard = self._to_vad.process(listened)
        self.turn_judge.hear(heard, tick.start)
        speech_events = self.vad.feed(heard, tick.start)
        for event in speech_events:
            if event.kind is VadKind.OFFSET:
                self._last_offset_t = event.t
            self._act(self.controller.on_vad(event), event.t)
        for judged in self.turn_judging.collect(self._now):
            complete = judged.verdict is not None and judged.verdict.complete
            self._act(self.controller.on_turn_judged(complete, self._now, judged.pause,
                                                     judged.decided), self._now)
        if self._force_listen.is_set():
            self._force_listen.clear()
            self._act(self.controller.force_listen(self._now), self._now)
        self._act(
            self.controller.on_clock(self._now, speech_until=self.vad.speech_until), self._now
        )
        self._drain_inbox()
        self._check_playback()
        self._gather(tick, cleaned)
        self._ticks += 1
        if self._ticks % self.config.levels_every_ticks == 0:
            self.events.emit(
                EventKind.LEVELS,
                self._now,
                mic=_dbfs(mic),
                assistant=self._assistant_level,
                echo_coupling=self.echo_path.coupling_db,
            )

    def _listening_signal(self, mic: np.ndarray, cleaned: np.ndarray) -> np.ndarray:
        """What voice activity listens to: normally the echo-cancelled mic.

        When the speaker is not heard by the mic at all (headphones), the canceller can
        only mute the user, so the raw mic is used. Until the echo path is known (the
        first quarter second of the assistant's first words, when the canceller has not
        converged either and mutes the user), the raw mic is used too: an onset there
        pauses playback, and once nothing plays the cancelled signal is the user's voice
        again, so a real barge-in is confirmed and an echo-triggered pause (speakers, first
        answer only) resumes after `resume_delay`.
        """
        if not self.echo.enabled or self.echo_path.negligible:
            return mic
        if self.echo_path.coupling_db is None and len(self._far_tick):
            return mic
        return cleaned

    def _feed_far_end(self) -> None:
        got = self.far_end.poll()
        if got is None:
            return
        echo_block, record_block = got
        self.echo.push_far(echo_block.samples, echo_block.t)
        self._far_tick = echo_block.samples
        self._assistant_level = _dbfs(record_block.samples)
        self.recording.assistant(record_block.samples, record_block.t)

    def _gather(self, tick: Unit, cleaned: np.ndarray) -> None:
        speech = self.vad.speaking
        for unit in self._units.add(tick, self._to_backend.process(cleaned), speech):
            self._route(unit, speech)

    def _route(self, unit: Unit, speech: bool) -> None:
        """Send a finished unit to the model, or hold it back (see below)."""
        if self._speculation is not None:
            # The model is answering early; what follows belongs to the user's turn only
            # if the answer is retracted, so it waits.
            self._after_speculation.append(unit)
            return
        quiet_listener = (
            self.config.skip_silent_units_while_speaking
            # A native-duplex model hears every frame: it listens while it speaks.
            and not self.controller.native_duplex
            and self.controller.state in (DuplexState.SPEAKING, DuplexState.RESPONDING)
            and not self._units.had_speech
            and not unit.gap_samples
        )
        had_speech = speech or self.controller.user_speaking
        if quiet_listener and not had_speech:
            # The assistant is talking and the user is quiet: feeding the model its own
            # (cancelled) echo only fills its context. Keep the last such unit in case the
            # user's speech began in its tail.
            self._held_unit = unit
            return
        if self._held_unit is not None:
            self._enqueue(self._held_unit, Control())
            self._held_unit = None
        self._enqueue(unit, self._native_control() if self.native else Control())

    def _native_control(self) -> Control:
        """What a native-duplex model is told with each unit about the floor.

        After a barge-in the model is muted (backend.interrupt) for a short hold; while
        the user holds the floor every unit renews it, so the model does not start again
        over them, and the first unit after their turn ended (the controller's
        end-of-turn silence, as for turn-based models: a pause mid-sentence is not the
        end) releases it.
        """
        if self.controller.state is DuplexState.INTERRUPTED:
            self._holding_model = True
            return Control(barge_in=True)
        if self._holding_model:
            if self.controller.user_turn_open:
                return Control(barge_in=True)
            self._holding_model = False
            return Control(turn_ended=True)
        return Control()

    def _enqueue(self, unit: Unit, control: Control) -> _Work:
        work = _Work(unit, control)
        with self._queue_cond:
            self._queue.append(work)
            while len(self._queue) > self.config.max_pending_units:
                # Too slow: drop what can be dropped (frames) from the oldest waiting units.
                stripped = False
                for waiting in self._queue:
                    if waiting.unit is not None and waiting.unit.frames:
                        self.dropped_frames += len(waiting.unit.frames)
                        waiting.unit = dataclasses.replace(waiting.unit, frames=())
                        stripped = True
                        break
                if not stripped:
                    break
            self._queue_cond.notify_all()
        return work

    # ------------------------------------------------------------------ actions
    def _act(self, actions: list[Action], t: float) -> None:
        """Carry out the controller's actions, then report its state changes."""
        for action in actions:
            if action is Action.END_TURN:
                self._end_turn(t)
            elif action is Action.PAUSE_PLAYBACK:
                self.player.pause()
                self._stop_from = self.controller.burst_start
                self._silent_at = None
                self.events.emit(EventKind.PLAYBACK, t, paused=True)
            elif action is Action.RESUME_PLAYBACK:
                self.player.resume()
                self._stop_from = self._silent_at = None
                self.events.emit(EventKind.PLAYBACK, t, paused=False)
            elif action in (Action.BARGE_IN, Action.CANCEL_RESPONSE):
                self._barge_in(t, action)
            elif action is Action.PREPARE_TURN:
                self._prepare_turn()
            elif action is Action.RETRACT_TURN:
                self._retract_turn()
            elif action is Action.JUDGE_TURN:
                self._judge_turn()
            elif action is Action.JUDGE_BURST:
                wants = self.turn_judging.judge_burst(self.controller.burst_start, self._now)
                self._act(self.controller.on_burst_judged(wants, self._now), self._now)
        history = self.controller.history
        for transition in history[self._history_seen :]:
            extra = {}
            if transition.state is DuplexState.SPEAKING and self._response is not None:
                extra["response"] = self._response
            self.events.emit(
                EventKind.STATE,
                transition.t,
                state=str(transition.state),
                reason=transition.reason,
                **extra,
            )
        self._history_seen = len(history)

    def _judge_turn(self) -> None:
        """Ask the end-of-turn model about the pause the user is in (see turn_end.py)."""
        self.turn_judging.ask(self.controller.burst_start, self.controller.pause_start,
                              self.config.duplex.judge_after or 0.0, self._now)

    def _end_turn(self, t: float) -> None:
        if self._speculation is not None:
            # The answer prepared during the silence is due: let it play. The units
            # gathered meanwhile were the silence itself. It may have been sent before
            # voice activity placed the end of the speech: time the answer from there.
            self.metrics.user_turn_ended(self._last_offset_t, self._after_interruption)
            self._speculation = None
            self._after_speculation.clear()
            self.player.resume()
            self._after_interruption = False
            return
        self._send_final_unit()
        self._after_interruption = False

    def _send_final_unit(self) -> _Work:
        self.metrics.user_turn_ended(self._last_offset_t, self._after_interruption)
        self._held_unit = None
        # The turn's last, partial unit goes at once. Backends need some audio to work on
        # (Qwen's encoder wants 25 ms or more), so a sliver is padded with the silence that
        # followed it anyway: the end of a turn is silence by definition.
        unit = self._units.take(min_seconds=MIN_FINAL_UNIT_SECONDS, now=self._now)
        return self._enqueue(unit, Control(turn_ended=True))

    def _prepare_turn(self) -> None:
        """Start answering before the end of the turn is certain; hold the audio."""
        if (self.controller.user_speaking
                and self._units.pending_seconds < MIN_FINAL_UNIT_SECONDS):
            # Before the pause is confirmed, a unit this short would be padded with
            # silence to the minimum; were the answer retracted, that silence would stay
            # in the middle of the user's speech. Wait for more audio instead.
            self.controller.decline_speculation()
            return
        self.player.pause()  # nothing plays now; the answer queues up behind this
        self._speculation = self._send_final_unit()
        self.events.emit(EventKind.PREPARED, self._now, retracted=False)

    def _retract_turn(self) -> None:
        """The user went on: drop the prepared answer and reopen their turn."""
        work = self._speculation
        self._speculation = None
        if work is None:
            return
        # Under the worker's write lock: a chunk of it is either queued before the flush
        # below (and dropped by it) or never written.
        with self._interrupt_lock:
            work.cancelled.set()
        with self._queue_cond:
            not_started = work in self._queue
            if not_started:
                self._queue.remove(work)
        if not not_started:
            self.backend.interrupt()
        self.player.flush()
        self.player.resume()
        self._first_audio_pending = None
        with self._queue_cond:
            if not not_started:
                self._queue.appendleft(_Work(None, Control()))
            # The turn's last unit, sent early, is back in the turn when not started;
            # either way, what was said since goes after it.
            if not_started:
                self._queue.appendleft(work)
                work.control = Control()
                work.cancelled.clear()
            for unit in self._after_speculation:
                self._queue.append(_Work(unit, Control()))
            self._after_speculation.clear()
            self._queue_cond.notify_all()
        self.retractions += 1
        # Which answer, when it had begun: the UI takes back the words it showed of it.
        self.events.emit(EventKind.PREPARED, self._now, retracted=True, response=work.response)

    def _barge_in(self, t: float, action: Action) -> None:
        # Mark the answer as interrupted before stopping the model, so the worker, which
        # wakes as soon as the model stops, knows to report what was heard.
        with self._interrupt_lock:
            if self._response is not None:
                self._interrupted.add(self._response)
            self._barge_ins += 1
        self.player.flush()
        self.player.resume()  # the queue is gone; the next answer must not start paused
        self.backend.interrupt()
        self._response_end = None
        with self._queue_cond:
            self._queue_cond.notify_all()  # an idle worker reports what was heard now
        if action is Action.BARGE_IN:
            self._after_interruption = True
            if self._stop_from is None:  # nothing was playing, or no pause at the onset
                start = self.controller.burst_start
                self._stop_from = start if start is not None else t
            self.metrics.barge_in_started(self._stop_from)
            if self._silent_at is not None:  # the pause at the onset already silenced it
                self._report_stop(self._silent_at)
        self._response_done = True
        self._first_audio_pending = None

    def _report_stop(self, silent_at: float) -> None:
        latency = self.metrics.output_silent(silent_at)
        if latency is not None:
            self.events.emit(EventKind.LATENCY, silent_at, kind="stop", seconds=latency)
        self._stop_from = self._silent_at = None

    # ------------------------------------------------------------------ playback
    def _check_stall(self) -> None:
        """Say so when the model stops in the middle of an answer (or never starts it),
        and when it goes on. A user speaking over it (playback paused) is no stall."""
        state = self.controller.state
        due = not self.player.paused and (
            state is DuplexState.RESPONDING
            or (state is DuplexState.SPEAKING and not self._response_done))
        played = self.player.played_position
        news = self.stall.update(time.monotonic(), due, played != self._played_seen)
        self._played_seen = played
        if news is not None:  # the window words it (app/ui/messages.py)
            self.events.emit(EventKind.NOTICE, self._now, what=news,
                             seconds=self.stall.after_s)

    def _check_playback(self) -> None:
        for rid, text in self._spoken.poll():
            self.events.emit(EventKind.SPOKEN, self._now, text=text, response=rid)
        self._played.poll()  # a backend that follows playback hears of it (played.py)
        self._check_stall()
        player = self.player
        if player.silenced != self._silenced_seen:
            self._silenced_seen = player.silenced
            silent_at = self._session_time_of(player.silenced_at)
            if self._stop_from is not None and silent_at is not None:
                if self.metrics.awaiting_silence:  # confirmed barge-in, silenced by flush
                    self._report_stop(silent_at)
                elif self._silent_at is None:  # paused at an onset: maybe a barge-in
                    self._silent_at = silent_at
        rid = self._first_audio_pending
        if rid is not None:
            start = player.response_start(rid)
            # A native model muted while the user holds the floor cannot start; a run that
            # slipped out before the mute waits until the user is done.
            held = self.native and self.controller.state is DuplexState.INTERRUPTED
            if start is not None and player.played_position > start and not held:
                heard_at = player.time_of_position(start)
                t = self._session_time_of(heard_at) if heard_at is not None else None
                if t is not None:
                    self._first_audio_pending = None
                    self._act(self.controller.on_model_speech(t), t)
                    measured = self.metrics.first_audio_out(t)
                    if measured is not None:
                        kind, latency = measured
                        self.events.emit(EventKind.LATENCY, t, kind=kind, seconds=latency)
        if self.native:
            self._check_native_end()
        elif (
            self._response_done
            and self.controller.state is DuplexState.SPEAKING
            and player.stats().queued_seconds == 0
            and not player.paused
        ):
            self._act(self.controller.on_playback_done(self._now), self._now)

    def _check_native_end(self) -> None:
        """A native model's run of speech ended: the floor is free once that is heard.

        Its stream never drains (the model listens aloud, in silence), so the end is where
        the model said END_OF_TURN, reached by the speaker.
        """
        end = self._response_end
        if (
            end is None
            or not self._response_done
            or self.controller.state is not DuplexState.SPEAKING
            or self.player.played_position < end
        ):
            return
        self._response_end = None
        heard_at = self.player.time_of_position(end)
        t = self._session_time_of(heard_at) if heard_at is not None else None
        t = self._now if t is None else min(t, self._now)
        self._act(self.controller.on_playback_done(t), t)

    # ------------------------------------------------------------------ worker
    def _drain_inbox(self) -> None:
        while self._inbox:
            kind, payload = self._inbox.popleft()
            if kind == "answer":  # a turn-based answer's first speech: (id, its work)
                rid, work = payload
                if work.cancelled.is_set():
                    continue  # retracted since: it never plays, and must not be timed
                kind, payload = "response", rid
            if kind == "response":
                self._response = payload
                self._response_done = False
                self._response_end = None
                self._first_audio_pending = payload
            elif kind == "done":
                rid, end = payload
                if rid == self._response:
                    self._response_done = True
                    self._response_end = end
            elif kind == "silent_answer" and not payload.cancelled.is_set():
                # The turn ended and the model said nothing.
                self._act(self.controller.on_model_listen(self._now), self._now)

    def _report_heard(self) -> None:
        """Worker side: tell the model what was heard of each answer cut by a barge-in.

        An answer may have been generated in full before the user interrupted it (the
        model runs ahead of playback), so this runs both when an answer ends and before
        every unit, and covers every interrupted answer that is fully generated.
        """
        with self._interrupt_lock:
            due = sorted((self._interrupted & self._generated) - self._reported)
            self._reported.update(due)
        for rid in due:
            self._played.forget(rid)  # heard() says where it was cut
            heard = self.player.heard(rid).text
            self.backend.heard(heard)
            self.events.emit(EventKind.HEARD, self._now, text=heard, response=rid)

    def _work_loop(self) -> None:
        while True:
            self._report_heard()
            # Between units, the model's freed temporaries go back to the system now and
            # then, or fragmentation grows the process over a long conversation (heap.py).
            self.heap.maybe_trim()
            with self._queue_cond:
                if self._stop.is_set():
                    return
                if not self._queue:
                    self._queue_cond.wait(0.1)  # woken by new work or a barge-in
                    continue
                work = self._queue.popleft()
            try:
                self._run_unit(work)
            except Exception as exc:
                what = "a retraction" if work.retraction else f"unit {work.unit.index}"
                log.exception("the model failed on %s", what)
                self.events.emit(
                    EventKind.ERROR, self._now, message=f"the model failed: {exc}"
                )

    def _run_unit(self, work: _Work) -> None:
        if work.retraction:
            self.backend.retract()
            return
        if self.native:
            self._run_native_unit(work)
            return
        barge_ins_before = self._barge_ins
        outputs = self._step(work)
        rid: int | None = None
        speech_compute_from = time.perf_counter()
        stopped = False
        for out in outputs:
            if work.cancelled.is_set() and not stopped:
                # Retracted while the model was starting it: that interrupt() may have
                # come before the answer's own stop flag existed (backends make a fresh
                # one per answer), and the whole answer would be made for nothing while
                # the next one waits. Say it again now that the answer is running.
                self.backend.interrupt()
                stopped = True
            if out.speech is not None:
                chunk = out.speech
                if rid != chunk.response_id:
                    rid = chunk.response_id
                    work.response = rid
                    # With its work: the listener drops it if the answer was retracted
                    # before it read this (a check here alone races with the retraction).
                    self._inbox.append(("answer", (rid, work)))
                    ready = self._session_time_of(time.monotonic())
                    self.events.emit(EventKind.ANSWER_READY,
                                     self._now if ready is None else ready, response=rid)
                with self._interrupt_lock:  # held across the write: see _retract_turn
                    if self._barge_ins != barge_ins_before:
                        # The user cut in while this answer was being made, before the
                        # listener knew its id: it is cut all the same, and the model is
                        # told what was heard of it (maybe nothing).
                        self._interrupted.add(rid)
                    interrupted = rid in self._interrupted or work.cancelled.is_set()
                    written = not interrupted and self.player.write(chunk)
                if written:
                    self._played.follow(rid)
                    self.metrics.speech_generated(
                        len(chunk.audio) / chunk.sample_rate,
                        time.perf_counter() - speech_compute_from,
                    )
                speech_compute_from = time.perf_counter()
            if out.text and not work.cancelled.is_set():  # a retracted answer is unsaid
                self.events.emit(EventKind.TEXT, self._now, text=out.text, response=rid)
            if out.decision is Decision.END_OF_TURN and rid is not None:
                self.player.end_response(rid)
        if rid is not None:
            self.player.end_response(rid)
            self._inbox.append(("done", (rid, None)))
            self.events.emit(EventKind.METRICS, self._now, summary=self.metrics.summary())
            with self._interrupt_lock:
                self._generated.add(rid)
            self._played.generated(rid)
            self._report_heard()
        elif work.control.turn_ended:
            self._inbox.append(("silent_answer", work))

    def _step(self, work: _Work) -> Iterable[Output]:
        """Step the model on one unit; report its cost. Returns its outputs."""
        assert work.unit is not None
        started = time.perf_counter()
        outputs = self.backend.step(work.unit, work.control)
        compute = time.perf_counter() - started
        lag = max(0.0, self._now - work.unit.end)
        self.metrics.unit_done(compute, lag)
        self.events.emit(
            EventKind.UNIT,
            work.unit.end,
            index=work.unit.index,
            compute=compute,
            lag=lag,
            frames=len(work.unit.frames),
        )
        return outputs

    def _run_native_unit(self, work: _Work) -> None:
        """A native-duplex model's unit: every frame's chunk joins the player's stream;
        only where a run of speech starts or ends is news (native.py)."""
        started = time.perf_counter()
        outputs = self._step(work)
        # A step without speech (a family that yields text only) keeps the stream live.
        silence = StandIn(work.unit.duration, self.backend.spec.audio_out_rate)
        for frame in self._runs.frames(outputs, silence):
            if frame.ends is not None:
                self._native_run_ended(frame.ends)
            if frame.starts is not None:
                with self._interrupt_lock:
                    cut = frame.starts in self._interrupted  # a frame in flight at the cut
                if not cut:
                    self._inbox.append(("response", frame.starts))
                    self._played.follow(frame.starts)
            chunk = frame.speech
            rid = chunk.response_id if chunk is not None else self._runs.current
            if chunk is not None:
                with self._interrupt_lock:
                    interrupted = rid in self._interrupted
                if interrupted:
                    self.player.skip(chunk)
                elif self.player.write(chunk):
                    self.metrics.speech_generated(len(chunk.audio) / chunk.sample_rate, 0.0)
            if frame.text:
                self.events.emit(EventKind.TEXT, self._now, text=frame.text, response=rid)
        # The whole unit's compute (step() may do its work lazily, while iterated) against
        # the audio it made: the stream's real-time factor.
        self.metrics.speech_compute += time.perf_counter() - started
        current = self._runs.current
        with self._interrupt_lock:
            cut = current is not None and current in self._interrupted
        if cut:
            # The model is muted from its next frame: nothing more of this run will play.
            self._runs.current = None
            self._native_run_ended(current)

    def _native_run_ended(self, rid: int) -> None:
        """Worker side: a run of speech is over (its end is queued up to here)."""
        self._inbox.append(("done", (rid, self.player.stream_position)))
        self.events.emit(EventKind.METRICS, self._now, summary=self.metrics.summary())
        with self._interrupt_lock:
            self._generated.add(rid)
        self._played.generated(rid)
        self._report_heard()

    # ------------------------------------------------------------------ events
    def _emit_state(self, reason: str) -> None:
        self.events.emit(
            EventKind.STATE, self._now, state=str(self.controller.state), reason=reason
        )
