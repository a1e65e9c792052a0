"""MiniCPM-o's voice on the live stream: each unit's speech codes become the unit's audio.

The backend steps the model once a second (a unit); the flow plays what each step yields
as one continuous stream, as it does for Moshi, whose voice channel never stops. So every
unit yields about one second of audio, speech or silence, and the stream keeps time with
the units:

* a speaking unit: its 25 speech codes (tts.py) go to token2wav (token2wav/stream.py),
  which voices every full window (28 codes, 25 voiced); the turn's first unit flushes
  shorter windows so the answer starts without waiting for a full one;
* the unit that ends the turn also flushes token2wav's rest: the last codes and the
  vocoder's held-back tail, so that unit yields more than a second;
* a unit with less than a second (no window filled yet, or a listening unit) is made
  up with silence, after the speech;
* what a turn's end yielded beyond its second is taken back from the silence of the
  units that follow, so the stream never drifts behind the units: over any run of units
  it holds their length, within the one flush.

A barge-in (a forced listen that closed the turn, a stop mid-unit) drops what
token2wav holds: nothing of the cut answer is voiced afterwards.

Chunks carry the run they belong to, as Moshi's do: `response_id` moves on at each
turn the model starts; the silence after a run keeps its id; before the first speech
it is 0. `seq` counts the chunks of one id; `text_span` is the unit's words.
"""

from __future__ import annotations

import numpy as np

from app.model.contract import SpeechChunk
from app.model.minicpm_o.duplex import UnitResult
from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.stream import SAMPLE_RATE, Token2Wav
from app.model.minicpm_o.tts import SpeechStream


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
        self.spoken_seconds = 0.0  # speech (not silence) voiced in this conversation

    def begin(self, prompt: VoicePrompt) -> None:
        """A new conversation in this voice."""
        self.token2wav.begin(prompt)
        self.speech.reset()
        self._ahead = 0
        self._response_id = self._seq = 0
        self._in_turn = False
        self.spoken_seconds = 0.0

    def cut(self) -> None:
        """Drop the answer in progress (barge-in from outside the model's own decode)."""
        self.speech.end_turn()
        self.token2wav.reset()
        self._in_turn = False

    def unit(self, result: UnitResult, text: str = "") -> tuple[SpeechChunk | None,
                                                                 SpeechChunk | None]:
        """The unit's speech, and the silence that makes the unit up (either may be None).

        The speech chunk belongs before an END_OF_TURN of this unit, the silence after.
        """
        codes = self.speech.feed(result)
        pieces: list[np.ndarray] = []
        first = result.speaking and not self._in_turn and not codes.interrupted
        if first:  # the model starts a turn: a new run on the stream
            self._response_id += 1
            self._seq = 0
            self._in_turn = True
        if codes.codes:
            pieces.append(self.token2wav.push(codes.codes, flush=codes.turn_started))
        if codes.turn_ended:
            if codes.interrupted:
                self.token2wav.reset()
            elif self._in_turn:
                pieces.append(self.token2wav.finish())
            self._in_turn = False
        audio = (np.concatenate(pieces).astype(np.float32, copy=False) if pieces
                 else np.zeros(0, np.float32))
        speech = self._chunk(audio, text) if audio.size else None
        self.spoken_seconds += audio.size / SAMPLE_RATE
        short = self.unit_samples - audio.size - self._ahead
        self._ahead = max(0, -short)
        silence = self._chunk(np.zeros(short, np.float32), "") if short > 0 else None
        return speech, silence

    def _chunk(self, audio: np.ndarray, text: str) -> SpeechChunk:
        chunk = SpeechChunk(audio, SAMPLE_RATE, self._response_id, self._seq, text)
        self._seq += 1
        return chunk
