"""MiniCPMOBackend: MiniCPM-o 4.5 behind the backend contract, native duplex every 1 s.

Each unit is 1 s of the user's audio at 16 kHz and the camera frames the timeline chose
for it (one per unit). `step()` embeds them (the model's vision and streaming audio
encoders), runs the unit through the duplex decoder (duplex.py: the model decides
itself whether to listen or to speak, and what) and yields, in this order:

* `Output(decision=SPEAK)` for a unit in which the model's turn is open (it spoke, or a
  turn goes on through it), then `Output(text=...)` with the unit's words (subtitles),
  then `Output(decision=END_OF_TURN)` when it closed its turn with <|turn_eos|> in it;
* `Output(decision=LISTEN)` for a unit it listened through;
* `Output(decision=END_OF_TURN)` alone for a unit whose open turn was closed by a
  forced listen before the model said anything.

Speech (live_voice.py): each unit's words go to the speech decoder (25 codes) and our
token2wav, and every unit yields about a second of audio on one live stream, speech or
silence, as a native-duplex model's voice channel does: `Output(speech=...)` with the
unit's speech before an END_OF_TURN, the silence that makes the unit up after it. The
voice is a recording (speech.py: the persona's, else the checkpoint's own); its prompt
is computed once and kept beside it.

Barge-in and forced listening: a unit that comes with `Control(barge_in=True)` or
`Control(force_listen=True)`, or after `interrupt()` (any thread; checked before each
generated token, so a unit in progress ends within one step), is given <|listen|>, its
open turn closed first with <|turn_eos|> (duplex.py). The session renews barge_in with
every unit while the user holds the floor and sends turn_ended once they are done; the
model then decides again. `heard()` does nothing: the model's own words are its cache,
as in the official loop, which never takes words back either.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    Unit,
)
from app.model.minicpm_o import protocol, schedule, speech
from app.model.minicpm_o.duplex import DuplexDecoder, Sampling, UnitResult
from app.model.minicpm_o.live_voice import LiveVoice, Voiced
from app.model.minicpm_o.protocol import SpecialIds, Window
from app.model.minicpm_o.tts import SpeechSampling, SpeechStream
from app.model.voice_file import read_mono

log = logging.getLogger(__name__)

FAMILY = "minicpm-o"
REGISTRY_ID = "minicpm-o-4.5"
SAMPLE_RATE = 16000  # what the audio encoder hears
OUTPUT_RATE = 24000  # token2wav's rate (the speech path, part 2)
UNIT_MS = 1000  # the model's unit: 1 s of audio, its frames, its decision
FRAMES_PER_UNIT = 1  # the demo's duplex: one 448 px frame a second


@dataclasses.dataclass
class Timing:
    """Per-unit compute, in seconds (filled when `record_timing` is on)."""

    units: list[float] = dataclasses.field(default_factory=list)
    encode: list[float] = dataclasses.field(default_factory=list)  # frames + audio
    speech: list[float] = dataclasses.field(default_factory=list)  # TTS + token2wav
    # Seconds into the unit at which the model opened a turn (its <|speak|> decision),
    # None in a unit that opened none; the unit's speech is ready at its `units` entry.
    opened: list[float | None] = dataclasses.field(default_factory=list)
    voiced: list[float] = dataclasses.field(default_factory=list)  # s of speech (not silence)
    started: list[float] = dataclasses.field(default_factory=list)  # perf_counter at start
    prefix_s: float = 0.0
    voice_s: float = 0.0  # the voice prompt (from its cache, or computed)


@dataclasses.dataclass
class Counts:
    """What reached the model in this conversation (tests and diagnostics read it)."""

    units: int = 0
    frames: int = 0
    audio_positions: int = 0


class MiniCPMOBackend:
    """MiniCPM-o 4.5 on our port (app/model/minicpm_o); see the module docstring."""

    def __init__(self, *, unit_ms: int = UNIT_MS, device: str | None = None,
                 sampling: Sampling | None = None, window: Window | None = None,
                 speech_sampling: SpeechSampling | None = None) -> None:
        if unit_ms != UNIT_MS:
            raise ValueError(f"MiniCPM-o hears whole {UNIT_MS} ms units (its duplex unit); "
                             f"{unit_ms} ms was asked for")
        self.spec = BackendSpec(
            family=FAMILY,
            unit_ms=UNIT_MS,
            audio_in_rate=SAMPLE_RATE,
            audio_out_rate=OUTPUT_RATE,
            frames_per_unit=FRAMES_PER_UNIT,
            native_duplex=True,
            voices=(),
            accepts_reference_voice=True,
            vram_gib=registry.plan_vram_gib(REGISTRY_ID),
        )
        self.device = device
        self.sampling = sampling or Sampling()
        self.window = window or Window()
        self._lock = threading.RLock()
        self._interrupt = threading.Event()
        self._loaded: Any = None
        self._ids: SpecialIds | None = None
        self._decoder: DuplexDecoder | None = None
        self._audio: Any = None
        self._voice: LiveVoice | None = None  # the speech path, when the checkpoint has one
        self.speech_sampling = speech_sampling or SpeechSampling()
        self._started = False
        # The test instrument of schedule.py (tiny test checkpoints only).
        self.schedule: schedule.SpeakSchedule | schedule.ReplySchedule | None = None
        self.record_timing = False
        self.timing = Timing()
        self.counts = Counts()
        self.results: list[UnitResult] = []  # this conversation's units, in order

    # --- lifecycle -------------------------------------------------------------------

    def load(self, source: ModelSource, quant: Quant, progress: Progress) -> None:
        from app.model.minicpm_o.loader import load_minicpmo

        self.close()
        if source.local_dir is None:
            raise BackendError("MiniCPM-o loads from a local folder",
                               hint="download it with `duetto models get` first")
        folder = Path(source.local_dir).expanduser()
        progress("loading MiniCPM-o", 0.0)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        loaded = load_minicpmo(folder, device=device, quant=quant)
        self.attach(loaded, schedule.read(folder))
        progress("loading MiniCPM-o", 1.0)

    def attach(self, loaded: Any,
               steer: schedule.SpeakSchedule | schedule.ReplySchedule | None = None) -> None:
        """Use a model already in memory (`loaded`: .model, .tokenizer). `steer` is the
        test instrument of schedule.py, for tiny checkpoints only."""
        with self._lock:
            self._loaded = loaded
            self._ids = SpecialIds.from_tokenizer(loaded.tokenizer)
            self.schedule = steer
            self._decoder = DuplexDecoder(
                loaded.model.llm, self._ids, sampling=self.sampling, window=self.window,
                forbidden=protocol.bad_token_ids(loaded.tokenizer),
                steer=steer.steer(self._ids, loaded.tokenizer) if steer is not None else None)
            token2wav = getattr(loaded, "token2wav", None)
            self._voice = (LiveVoice(SpeechStream(loaded.model.tts, sampling=self.speech_sampling),
                                     token2wav) if token2wav is not None else None)
            self.spec = dataclasses.replace(
                self.spec, voices=tuple(getattr(loaded, "builtin_voices", None) or ()))
            self._started = False

    def _require_loaded(self) -> Any:
        if self._loaded is None or self._decoder is None:
            raise BackendError("the model is not loaded", hint="call load() first")
        return self._loaded

    @property
    def decoder(self) -> DuplexDecoder | None:
        return self._decoder

    @property
    def loaded(self) -> Any:
        return self._loaded

    def close(self) -> None:
        self._interrupt.set()
        with self._lock:
            self._loaded = None
            self._decoder = None
            self._audio = None
            self._started = False
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- a conversation ----------------------------------------------------------------

    def start(self, persona: Persona) -> None:
        """Begin a conversation: a fresh cache holding the system prefix (the persona's
        role text and, when it has one, its voice recording), a fresh audio stream."""
        loaded = self._require_loaded()
        t0 = time.perf_counter()
        with self._lock:
            model = loaded.model
            self._voice_s = 0.0
            recording, prompt = self._voice_of(loaded, persona)
            voice_embeds = None
            if recording is not None:
                # The official offline path (the whole recording in one pass).
                with torch.no_grad():
                    voice_embeds = model.embed_reference_audio(read_recording(recording))
            prefix = protocol.system_prefix(self._ids, loaded.tokenizer, persona.role_prompt,
                                            voice_embeds)
            self._decoder.start(prefix)
            self._audio = model.new_audio_stream()
            if self._voice is not None and prompt is not None:
                self._voice.begin(prompt)
            self._interrupt.clear()
            self.counts = Counts()
            self.results = []
            self.timing = Timing(voice_s=self._voice_s)
            self._started = True
        self.timing.prefix_s = time.perf_counter() - t0

    def _voice_of(self, loaded: Any, persona: Persona) -> tuple[Path | None, Any]:
        """The recording the persona speaks with, and its prompt for token2wav (None
        without a speech path: then only the persona's own recording, for the LLM)."""
        if self._voice is None:
            if persona.voice.builtin:
                raise BackendError(f"MiniCPM-o has no built-in voice '{persona.voice.builtin}'",
                                   hint="give the persona a voice recording, or no voice")
            audio = persona.voice.reference_audio
            return (Path(audio) if audio is not None else None), None
        recording = speech.voice_recording(loaded, persona)
        t = time.perf_counter()
        prompt = loaded.voices.prompt_for(recording)
        self._voice_s = time.perf_counter() - t
        return recording, prompt

    def interrupt(self) -> None:
        """Make the model listen from its next generated token on (any thread)."""
        self._interrupt.set()

    def heard(self, played_text: str) -> None:
        """Nothing to take back (module docstring)."""
        self._require_loaded()

    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        loaded = self._require_loaded()
        if not self._started:
            raise BackendError("no conversation", hint="call start(persona) first")
        if unit.sample_rate != SAMPLE_RATE:
            raise BackendError(f"MiniCPM-o hears 16 kHz audio; this unit is {unit.sample_rate} Hz",
                               hint="cut units at the backend's audio_in_rate")
        audio = np.asarray(unit.audio, dtype=np.float32).reshape(-1)
        if audio.size != SAMPLE_RATE * UNIT_MS // 1000:
            raise BackendError(f"a MiniCPM-o unit holds 1 s of audio ({SAMPLE_RATE} samples); "
                               f"this one has {audio.size}",
                               hint="cut units at the backend's unit_ms (1000 ms)")
        with self._lock:
            t0 = time.perf_counter()
            model = loaded.model
            with torch.no_grad():
                frames = [model.embed_frame(np.ascontiguousarray(f.pixels))
                          for f in unit.frames]
                heard = self._audio.feed(audio)
            t_encoded = time.perf_counter()
            forced = control.barge_in or control.force_listen or self._interrupt.is_set()
            self._interrupt.clear()
            hear = getattr(self.schedule, "hear", None)
            if hear is not None:  # a tiny test model's script hears the flow too
                hear(self._decoder.state.units, control, audio)
            result = self._decoder.step(protocol.unit_prefill(self._ids, frames, heard),
                                        force_listen=forced, stop=self._interrupt)
            text = loaded.tokenizer.decode(list(result.text_ids), skip_special_tokens=True)
            t_decided = time.perf_counter()
            voiced = None
            spoken = self._voice.spoken_seconds if self._voice is not None else 0.0
            if self._voice is not None:
                voiced = self._speech(result, text)
            self.results.append(result.without_hidden())  # the hidden states are device memory
            self.counts.units += 1
            self.counts.frames += len(frames)
            self.counts.audio_positions += int(heard.shape[0])
            if self.record_timing:
                done = time.perf_counter()
                self.timing.units.append(done - t0)
                self.timing.encode.append(t_encoded - t0)
                self.timing.speech.append(done - t_decided)
                self.timing.opened.append(None if result.opened_at is None
                                          else result.opened_at - t0)
                self.timing.voiced.append((self._voice.spoken_seconds - spoken)
                                          if self._voice is not None else 0.0)
                self.timing.started.append(t0)
            outputs = self._outputs(result, text, voiced)
        if voiced is not None and voiced.end_due:
            return self._then_turn_end(outputs)
        return iter(outputs)

    def _then_turn_end(self, outputs: list[Output]) -> Iterator[Output]:
        """The unit's outputs, then its turn's last audio and END_OF_TURN: voiced only
        once the unit's speech has gone to the flow (live_voice.py), off the unit's
        critical path. A barge-in meanwhile drops it."""
        yield from outputs
        with self._lock:
            voice = self._voice
            assert voice is not None
            if self._interrupt.is_set():
                voice.drop_turn_end()
                tail = None
            else:
                started = time.perf_counter()
                tail = voice.finish_turn()
                if self.record_timing and self.timing.speech:
                    self.timing.speech[-1] += time.perf_counter() - started
                    if tail is not None:
                        self.timing.voiced[-1] += tail.audio.size / tail.sample_rate
        if tail is not None:
            yield Output(speech=tail)
        yield Output(decision=Decision.END_OF_TURN)

    def _speech(self, result: UnitResult, text: str) -> Voiced:
        """The unit's voice. Every float tensor the speech path makes names its dtype:
        torch's default dtype is one setting for the process, and a model build on another
        thread (the window sizes memory plans in the background) changes it while it runs;
        a conversation starting meanwhile once failed with "Input type (c10::BFloat16) and
        bias type (float) should be the same". Waiting for the build lock here instead
        would stall the conversation for as long as a plan takes."""
        return self._voice.unit(result, text)

    @staticmethod
    def _outputs(result: UnitResult, text: str, voiced: Voiced | None) -> list[Output]:
        """The unit's decision, words and speech, in the order the flow reads them (see
        live_voice.Voiced): the unit's decision and words, its speech before its own
        END_OF_TURN, the silence after. A turn whose end is due (`end_due`) gets its
        last audio and END_OF_TURN after these (_then_turn_end). Without a speech path
        (`voiced` None): the decision, the words, END_OF_TURN."""
        outputs: list[Output] = []
        if not result.speaking:
            outputs.append(Output(decision=Decision.END_OF_TURN if result.closed_turn
                                  else Decision.LISTEN))
        else:
            outputs.append(Output(decision=Decision.SPEAK))
            if text:
                outputs.append(Output(text=text))
        if voiced is not None and voiced.speech is not None:
            outputs.append(Output(speech=voiced.speech))
        ends = (voiced.ends_turn if voiced is not None
                else result.turn_ended or result.closed_turn)
        if result.speaking and ends:
            outputs.append(Output(decision=Decision.END_OF_TURN))
        if voiced is not None and voiced.silence is not None:
            outputs.append(Output(speech=voiced.silence))
        return outputs


def read_recording(path: Path) -> np.ndarray:
    """A voice recording as 16 kHz mono float32."""
    path = Path(path).expanduser()
    mono = read_mono(path, SAMPLE_RATE)
    if mono.size == 0:
        raise BackendError(f"the voice recording {path.name} is empty",
                           hint="use a few seconds of clear speech")
    return np.nan_to_num(mono).astype(np.float32)
