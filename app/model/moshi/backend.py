"""MoshiBackend: Moshi / PersonaPlex behind the backend contract, native duplex every 80 ms.

Each unit is 80 ms of the user's audio at 24 kHz (a unit holding several whole frames
is stepped frame by frame; camera frames are ignored: the model hears, it does not
see). Per frame, `step()` yields, in this order:

* `Output(decision=...)`: SPEAK when the frame's inner-monologue token is a word or the
  frame's decoded audio is above SPEECH_RMS (Moshi writes a word at its onset and PAD
  for the rest of it, so the text alone flickers; the audio level covers the rest);
  LISTEN otherwise; END_OF_TURN instead of LISTEN once, after END_HANGOVER_FRAMES
  quiet frames that follow speech (not after speech cut short by muting).
* `Output(text=...)` for a frame whose token is a word (subtitles; PAD is silence).
* `Output(speech=SpeechChunk(...))`: the frame's 1920 samples, always (also while
  listening: Moshi's voice channel never stops, and a steady 80 ms a frame keeps the
  player from running dry). `response_id` counts runs of speech: it moves on at each
  LISTEN→SPEAK, and quiet frames after a run keep its id (frames before the first
  speech carry 0); `seq` counts chunks within one id; `text_span` is the frame's text.

The model's output is one frame behind what it has heard (its acoustic codebooks are
delayed one frame); the first step of a conversation therefore yields silence.

Barge-in, force-listen, interrupt
---------------------------------
The model decides itself when to speak, but the user can make it stop. While muted,
each frame still hears the user's audio, but the model's own streams are forced to PAD
text and Mimi's silence codes (so its context holds the silence it actually produced),
and the frame's audio is zeros. Muted frames are LISTEN.

* `Control(force_listen=True)` mutes the frame it comes with (a held button).
* `Control(barge_in=True)`, or `interrupt()` from any thread (checked before every
  frame), mutes until a unit comes with `turn_ended=True` or BARGE_HOLD_FRAMES frames
  have passed since the last barge-in signal: the flow says when the user is done; the
  hold is the fallback when it does not.

`heard()` does nothing here: the model's own audio stream is its memory of what it
said, and from the barge-in on that stream holds the forced silence. What the player
had buffered but never played (a frame or two) stays in the model's memory; a stream
model cannot take back frames without replaying the whole conversation.

Personas (persona.py): `start()` feeds the voice prompt, silences and role text before
the user is heard. The state after the voice prompt, and after the whole prefix, is
kept per voice (and role) for the next conversations with that voice: they start by
copying it instead of running the model over the prefix again.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from app.model import registry
from app.model.contract import (
    BackendError,
    BackendSpec,
    Control,
    Decision,
    ModelSource,
    Output,
    Persona,
    Progress,
    Quant,
    SpeechChunk,
    Unit,
)
from app.model.moshi import loader, persona
from app.model.moshi.codec import FRAME_SAMPLES, StreamingDecoder, StreamingEncoder
from app.model.moshi.engine import NUM_CODEBOOKS, Forced, Sampling, Snapshot, Stepper

log = logging.getLogger(__name__)

FAMILY = "moshi"
SAMPLE_RATE = 24000
UNIT_MS = 80
SPEECH_RMS = 0.01  # -40 dBFS: above this a frame counts as speech
END_HANGOVER_FRAMES = 6  # 0.48 s of quiet after speech ends the turn
BARGE_HOLD_FRAMES = 13  # about 1 s muted after a barge-in when no turn end comes
# Prefix states kept for the next conversations (voice-only and voice+role ones share the
# count). Each holds the KV cache of the prefix: about 0.5 MB a frame on the 7B in bf16,
# some 80 MB for a typical 150-frame prefix, on the model's device.
PREFIX_CACHE_SIZE = 4


@dataclasses.dataclass
class Timing:
    """Per-frame compute times in seconds (filled when `record_timing` is on)."""

    frames: list[float] = dataclasses.field(default_factory=list)
    prefix_s: float = 0.0
    prefix_frames: int = 0


class MoshiBackend:
    """Moshi/PersonaPlex on transformers' Moshi and Mimi; see the module docstring."""

    def __init__(self, *, unit_ms: int = UNIT_MS, device: str | None = None,
                 sampling: Sampling | None = None, context_frames: int | None = None) -> None:
        # A unit may hold several frames (the model still steps one frame at a time);
        # 80 ms keeps the latency the model was built for.
        if unit_ms < UNIT_MS or unit_ms % UNIT_MS:
            raise ValueError(f"unit_ms must be a multiple of {UNIT_MS} (Moshi's frame)")
        self.spec = BackendSpec(
            family=FAMILY,
            unit_ms=unit_ms,
            audio_in_rate=SAMPLE_RATE,
            audio_out_rate=SAMPLE_RATE,
            frames_per_unit=0,
            native_duplex=True,
            voices=(),
            accepts_reference_voice=True,
            # PersonaPlex-7B's memory plan until a checkpoint is loaded.
            vram_gib=registry.plan_vram_gib("personaplex-7b"),
        )
        self.device = device
        # Frames the model attends to; None: the longest the device's memory holds.
        self.context_frames = context_frames
        self.context_note = ""  # which context the load chose, and why
        self.sampling = sampling or Sampling()
        self._lock = threading.RLock()
        self._interrupt = threading.Event()
        self._loaded: loader.Loaded | None = None
        self._stepper: Stepper | None = None
        self._encoder: StreamingEncoder | None = None
        self._decoder: StreamingDecoder | None = None
        self._silence: tuple[int, ...] = ()
        self._sine: tuple[int, ...] = ()
        self._voices: dict[str, Path] = {}
        self._cache: OrderedDict[tuple, Snapshot] = OrderedDict()
        self._voice_frames: dict[str, list[persona.PrefixFrame]] = {}  # encoded voices
        self._started = False
        self.last_prefix: list[persona.PrefixFrame] = []  # the last start's prefix, in order
        self.prefix_from_cache = ""  # "", "voice" or "persona": what start() reused
        self.record_timing = False
        self.timing = Timing()
        self._reset_turn_state()

    # --- lifecycle -------------------------------------------------------------------

    def load(self, source: ModelSource, quant: Quant, progress: Progress) -> None:
        """Load after the memory plan said it fits (with the longest context that fits when
        none was given; `context_note` says which)."""
        self.close()
        self.attach(loader.load(source, quant, progress, device=self.device,
                                context=self.context_frames))

    def attach(self, loaded: loader.Loaded) -> None:
        """Use a model that is already in memory."""
        with self._lock:
            self._loaded = loaded
            self.context_note = loaded.context_note
            if loaded.plan is not None:
                self.spec = dataclasses.replace(self.spec, vram_gib=self._vram_gib(loaded))
            mimi = loaded.model.audio_encoder
            self._stepper = Stepper(loaded.model, loaded.delays, self.sampling)
            self._encoder = StreamingEncoder(mimi, NUM_CODEBOOKS)
            self._decoder = StreamingDecoder(mimi)
            self._silence = persona.silence_codes(mimi)
            self._sine = persona.sine_codes(mimi)
            self._voices = self._find_voices(loaded.folder)
            self._cache.clear()
            self._voice_frames.clear()
            self.spec = dataclasses.replace(self.spec, voices=tuple(sorted(self._voices)))

    @staticmethod
    def _vram_gib(loaded: loader.Loaded) -> dict[Quant, float]:
        """GiB this checkpoint needs per quantization at the loaded context (its plan)."""
        from app.model import memory_plan

        planner = memory_plan.Planner(FAMILY, loaded.model.config, device=str(loaded.device),
                                      name=loaded.plan.model, layout=loaded.layout)
        return {q: planner.plan(q, loaded.plan.context).total_gib for q in Quant}

    @staticmethod
    def _find_voices(folder: Path) -> dict[str, Path]:
        """The checkpoint's voice set: recordings under voices/ (e.g. PersonaPlex's)."""
        found: dict[str, Path] = {}
        base = folder / "voices"
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                if path.suffix.lower() in persona.AUDIO_SUFFIXES:
                    found.setdefault(path.stem, path)
        return found

    def _require_loaded(self) -> loader.Loaded:
        if self._loaded is None:
            raise BackendError("the model is not loaded", hint="call load() first")
        return self._loaded

    @property
    def loaded(self) -> loader.Loaded | None:
        return self._loaded

    def close(self) -> None:
        self._interrupt.set()
        with self._lock:
            self._loaded = None
            self._stepper = None
            self._encoder = None
            self._decoder = None
            self._cache.clear()
            self._voice_frames.clear()
            self._started = False
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- personas --------------------------------------------------------------------

    def _voice_path(self, p: Persona) -> Path | None:
        voice = p.voice
        if voice.builtin:
            if voice.builtin not in self._voices:
                known = ", ".join(sorted(self._voices)) or "none in this checkpoint"
                raise BackendError(f"unknown voice '{voice.builtin}'",
                                   hint=f"available voices: {known}; or use a recording")
            return self._voices[voice.builtin]
        if voice.reference_audio is not None:
            path = Path(voice.reference_audio).expanduser()
            if not path.is_file():
                raise BackendError(f"the voice recording {path} does not exist",
                                   hint="pick an existing audio file")
            return path
        return None

    def start(self, p: Persona) -> None:
        """Begin a conversation: reset the streams, then feed the persona prefix."""
        loaded = self._require_loaded()
        voice_path = self._voice_path(p)
        t0 = time.perf_counter()
        with self._lock:
            stepper = self._stepper
            assert stepper is not None and self._encoder is not None
            stepper.reset()
            self._encoder.reset()
            self._decoder.reset()
            self._interrupt.clear()
            self._reset_turn_state()
            vkey = persona.voice_key(voice_path) if voice_path is not None else "-"
            role = p.role_prompt
            rest = persona.role_frames(role, loaded.vocab, self._sine, self._silence)
            voice: list[persona.PrefixFrame] = []
            if voice_path is not None:
                if vkey not in self._voice_frames:
                    audio = persona.read_voice(voice_path)
                    codes = persona.encode_voice(loaded.model.audio_encoder, audio)
                    self._voice_frames[vkey] = persona.voice_frames(
                        codes, self._sine, loaded.vocab.pad_id)
                voice = self._voice_frames[vkey]
            self.last_prefix = voice + rest
            if ("persona", vkey, role) in self._cache:
                stepper.restore(self._cache[("persona", vkey, role)])
                self._cache.move_to_end(("persona", vkey, role))
                self.prefix_from_cache = "persona"
                fed = 0
            else:
                self.prefix_from_cache = ""
                fed = len(rest)
                if ("voice", vkey) in self._cache:
                    stepper.restore(self._cache[("voice", vkey)])
                    self.prefix_from_cache = "voice"
                else:
                    self._feed(voice)
                    self._remember(("voice", vkey), stepper.snapshot())
                    fed += len(voice)
                self._feed(rest)
                self._remember(("persona", vkey, role), stepper.snapshot())
            # The user's stream and the model's decoded audio start here, as PersonaPlex
            # resets Mimi's streaming state after the prefix.
            self._encoder.reset()
            self._decoder.reset()
            self._started = True
        self.timing.prefix_s = time.perf_counter() - t0
        self.timing.prefix_frames = fed

    def _feed(self, frames: list[persona.PrefixFrame]) -> None:
        stepper = self._stepper
        for frame in frames:
            stepper.step(torch.tensor(frame.user), frame.forced)

    def _remember(self, key: tuple, snap: Snapshot) -> None:
        self._cache[key] = snap
        self._cache.move_to_end(key)
        while len(self._cache) > PREFIX_CACHE_SIZE:
            self._cache.popitem(last=False)

    # --- the conversation ------------------------------------------------------------

    def _reset_turn_state(self) -> None:
        self._speaking = False
        self._quiet_run = 0
        self._response_id = 0
        self._seq = 0
        self._hold = 0

    def interrupt(self) -> None:
        """Mute the model from its next frame on (any thread); see the module docstring."""
        self._interrupt.set()

    def heard(self, played_text: str) -> None:
        """Nothing to do for a stream model (module docstring explains why)."""
        self._require_loaded()

    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        loaded = self._require_loaded()
        if not self._started:
            raise BackendError("no conversation", hint="call start(persona) first")
        if unit.sample_rate != SAMPLE_RATE:
            raise BackendError(f"Moshi hears 24 kHz audio; this unit is {unit.sample_rate} Hz",
                               hint="cut units at the backend's audio_in_rate")
        audio = np.asarray(unit.audio, dtype=np.float32).reshape(-1)
        if audio.size == 0 or audio.size % FRAME_SAMPLES:
            raise BackendError(
                f"a Moshi unit holds whole 80 ms frames ({FRAME_SAMPLES} samples); "
                f"this one has {audio.size}",
                hint="cut units at the backend's unit_ms (80 ms)")
        outputs: list[Output] = []
        with self._lock:
            for i in range(audio.size // FRAME_SAMPLES):
                chunk = audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]
                outputs += self._frame(loaded, chunk, control if i == 0 else Control(
                    force_listen=control.force_listen))
        return iter(outputs)

    def _muted(self, control: Control) -> bool:
        if control.barge_in or self._interrupt.is_set():
            self._interrupt.clear()
            self._hold = BARGE_HOLD_FRAMES
        elif control.turn_ended:
            self._hold = 0
        muted = self._hold > 0 or control.force_listen
        if self._hold > 0:
            self._hold -= 1
        return muted

    def _frame(self, loaded: loader.Loaded, chunk: np.ndarray, control: Control) -> list[Output]:
        t0 = time.perf_counter()
        muted = self._muted(control)
        vocab = loaded.vocab
        user = self._encoder.encode(torch.from_numpy(chunk))
        forced = Forced(text=vocab.pad_id, audio=self._silence) if muted else None
        tokens = self._stepper.step(user, forced)
        if tokens is None:
            wave = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            text_id = vocab.pad_id
        else:
            codes = tokens.codes.view(1, NUM_CODEBOOKS, 1).to(loaded.device)
            wave = self._decoder.decode(codes).reshape(-1).float().cpu().numpy()
            text_id = tokens.text
        if muted:
            wave = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        text = "" if muted else vocab.piece_text(text_id)
        speaking = not muted and (bool(text) or float(np.sqrt(np.mean(wave**2))) > SPEECH_RMS)
        if muted:
            # A response cut short is over: the next speech is a new response, and it
            # gets no END_OF_TURN (it did not end by itself).
            self._speaking = False
            self._quiet_run = 0
        decision = self._decide(speaking)
        if self.record_timing:
            self.timing.frames.append(time.perf_counter() - t0)
        out = [Output(decision=decision)]
        if text:
            out.append(Output(text=text))
        out.append(Output(speech=SpeechChunk(wave, SAMPLE_RATE, self._response_id, self._seq,
                                             text)))
        self._seq += 1
        return out

    def _decide(self, speaking: bool) -> Decision:
        if speaking:
            if not self._speaking:
                self._response_id += 1
                self._seq = 0
            self._speaking = True
            self._quiet_run = 0
            return Decision.SPEAK
        self._quiet_run += 1
        if self._speaking and self._quiet_run >= END_HANGOVER_FRAMES:
            self._speaking = False
            return Decision.END_OF_TURN
        return Decision.LISTEN
