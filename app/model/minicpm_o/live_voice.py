"""MiniCPM-o's voice on the live stream: each unit's speech codes become the unit's audio.

The backend steps the model once a second (a unit); the flow plays what each step yields
as one continuous stream, as it does for Moshi, whose voice channel never stops. So every
unit yields about one second of audio, speech or silence, and the stream keeps time with
the units:

* a speaking unit: its 25 speech codes (tts.py) go to token2wav (token2wav/stream.py),
  which voices every full window (28 codes, 25 voiced); the turn's first unit flushes
  shorter windows so the answer starts without waiting for a full one;
* the turn's end flushes token2wav's rest: the last codes and the vocoder's held-back
  tail (a few hundred ms). When the unit that ends the turn has already filled its
  second, that flush (a second flow pass) is voiced only once the unit's speech is out
  (`Voiced.end_due`, then `finish_turn()`), so it is not on the unit's critical path:
  the speech reaches the player as early as a unit with one flow pass would, and the
  tail follows it a flow pass later, far ahead of its time to play (it plays after a
  full second). Else the flush is voiced in the unit itself, before its silence. The
  unit that ended a turn used to pay for both passes before its speech went out; later
  the flush moved to the next unit, which was cheap only when the model listened
  there: a new turn starting in it paid for both (an underrun in bench duplex);
* a unit with less than a second (no window filled yet, or a listening unit) is made
  up with silence, after the speech;
* what a turn's end yielded beyond its second is taken back from the silence of the
  units that follow, so the stream never drifts behind the units: over any run of units
  it holds their length, within the one flush.

A barge-in (a forced listen that closed the turn, a stop mid-unit) drops what
token2wav holds, a turn end still due included: nothing of the cut answer is voiced
afterwards.

The first window a process runs through token2wav pays for its allocations and kernel
set-up (on the tiny model on the CPU about three times a warm window); `begin` runs one
throwaway window in the voice, so that cost falls on the conversation's start and not
on its first answer, whose late unit would otherwise run the live stream late.

Chunks carry the run they belong to, as Moshi's do: `response_id` moves on at each
turn the model starts; the silence after a run keeps its id; before the first speech
it is 0. `seq` counts the chunks of one id; `text_span` is the unit's words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from app.model.contract import SpeechChunk
from app.model.minicpm_o.duplex import UnitResult
from app.model.minicpm_o.token2wav.flow import SILENCE_CODE
from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.stream import SAMPLE_RATE, STRIDE_CODES, Token2Wav
from app.model.minicpm_o.tts import SpeechStream

log = logging.getLogger(__name__)


@dataclass
class Voiced:
    """One unit's voice, in the order it plays: the unit's `speech`, then its
    END_OF_TURN when `ends_turn`; then `silence`, making the unit up. With `end_due`
    the turn ended in a unit whose second is full: once `speech` is out, the caller asks
    `LiveVoice.finish_turn()` for the turn's last audio, and END_OF_TURN follows that."""

    speech: SpeechChunk | None = None
    ends_turn: bool = False
    silence: SpeechChunk | None = None
    end_due: bool = False


class LiveVoice:
    """One conversation's voice (module docstring). Used from the stepping thread only."""

    def __init__(self, speech: SpeechStream, token2wav: Token2Wav, *,
                 unit_seconds: float = 1.0) -> None:
        self.speech = speech
        self.token2wav = token2wav
        self.unit_samples = round(unit_seconds * SAMPLE_RATE)
        self._ahead = 0  # samples yielded beyond the units' length so far (>= 0)
        self._response_id = 0
        self._seq = 0
        self._in_turn = False
        self._end_due = False  # a turn's end waits for finish_turn() (Voiced.end_due)
        self.spoken_seconds = 0.0  # speech (not silence) voiced in this conversation
        self._warmed = False

    def begin(self, prompt: VoicePrompt) -> None:
        """A new conversation in this voice."""
        self.token2wav.begin(prompt)
        if not self._warmed:
            self._warm()
            self._warmed = True
        self.speech.reset()
        self._ahead = 0
        self._response_id = self._seq = 0
        self._in_turn = False
        self._end_due = False
        self.spoken_seconds = 0.0

    def _warm(self) -> None:
        """One throwaway turn (module docstring): a turn-start window of silence codes and
        its last chunk. The vocoder's noise generator is put back, so the conversation's
        speech is what it would have been without this."""
        generator = getattr(self.token2wav.vocoder, "generator", None)
        state = generator.get_state() if generator is not None else None
        self.token2wav.push([SILENCE_CODE] * STRIDE_CODES, flush=True)
        self.token2wav.finish()
        if state is not None:
            generator.set_state(state)

    def unit(self, result: UnitResult, text: str = "") -> Voiced:
        """The unit's voice (module docstring; Voiced says in which order it plays)."""
        voiced = Voiced()
        if self._end_due:
            # The caller stopped reading the last unit's outputs before finish_turn():
            # its run is over for the flow, so its last audio is dropped, not voiced
            # inside whatever this unit is.
            log.warning("a turn's last audio was not asked for (finish_turn) and is dropped")
            self._drop_turn_end()
        pieces: list[np.ndarray] = []
        codes = self.speech.feed(result)
        first = result.speaking and not self._in_turn and not codes.interrupted
        if first:  # the model starts a turn: a new run on the stream
            self._response_id += 1
            self._seq = 0
            self._in_turn = True
        if codes.codes:
            pieces.append(self.token2wav.push(codes.codes, flush=codes.turn_started))
        speech = (np.concatenate(pieces).astype(np.float32, copy=False) if pieces
                  else np.zeros(0, np.float32))
        if codes.turn_ended:
            if codes.interrupted:
                self.token2wav.reset()
                voiced.ends_turn = True
            elif self._in_turn and speech.size >= self.unit_samples:
                # This unit's second is full: its end (the last codes, the vocoder's held
                # tail) is a second flow pass, voiced once the speech is out.
                self._end_due = voiced.end_due = True
            else:
                if self._in_turn:
                    speech = np.concatenate([speech, self.token2wav.finish()])
                voiced.ends_turn = True
            self._in_turn = False
        voiced.speech = self._chunk(speech, text) if speech.size else None
        self.spoken_seconds += speech.size / SAMPLE_RATE
        voiced.silence = self._make_up(speech.size)
        return voiced

    def finish_turn(self) -> SpeechChunk | None:
        """The end of a turn whose last unit was full (Voiced.end_due): its last audio,
        taken back from the silence of the units that follow. None if none is due."""
        if not self._end_due:
            return None
        tail = self._finish_turn_audio()
        self._ahead += tail.size  # the unit was full already: all of it is ahead
        return self._chunk(tail, "") if tail.size else None

    def drop_turn_end(self) -> None:
        """The model was talked over before its turn's end was voiced: drop it."""
        if self._end_due:
            self._drop_turn_end()

    def _finish_turn_audio(self) -> np.ndarray:
        self._end_due = False
        tail = self.token2wav.finish()
        self.spoken_seconds += tail.size / SAMPLE_RATE
        return tail

    def _drop_turn_end(self) -> None:
        self._end_due = False
        self.token2wav.reset()

    def _make_up(self, heard: int) -> SpeechChunk | None:
        """The silence that makes a unit with `heard` samples of speech up to its second,
        less what earlier units yielded beyond theirs."""
        short = self.unit_samples - heard - self._ahead
        self._ahead = max(0, -short)
        return self._chunk(np.zeros(short, np.float32), "") if short > 0 else None

    def _chunk(self, audio: np.ndarray, text: str) -> SpeechChunk:
        chunk = SpeechChunk(audio, SAMPLE_RATE, self._response_id, self._seq, text)
        self._seq += 1
        return chunk
