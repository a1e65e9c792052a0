"""QwenOmniBackend: Qwen2.5-Omni (3B/7B) behind the backend contract, runtime duplex.

Threads and interruption
------------------------
All calls except `interrupt()` come from one thread (the session loop). `step()`
prefills its unit at once (before returning) and returns an iterator; for a unit that
ends the user's turn, iterating it generates the answer as it goes: SPEAK, then text
and speech outputs, then END_OF_TURN.

`interrupt()` may be called from any thread at any time. It sets a flag that the answer
loop checks before every forward pass, so generation stops within one step (one thinker
token + one talker code, or one token2wav chunk) and the iterator ends without
END_OF_TURN. Then, from the session thread:

* `heard(played_text)` keeps in the context only what the user actually heard: the
  cache is rolled back to the end of the user's turn, `played_text` is prefilled as the
  assistant's words and the assistant turn is closed, so the next answer continues
  from there.
* A `step()` with `Control(barge_in=True)` or `force_listen=True` does the same as
  `interrupt()` first (for callers without a second thread); if `heard()` was not
  called, the text of the speech chunks already yielded counts as heard.

Units that arrive while an answer is still being generated (no barge-in) are held and
prefilled, in order, into the user's next turn once the answer is committed: until then
the answer's own tokens occupy the end of the cache.

Long sessions: when the context passes `token_budget` tokens, the oldest turns (then
the open turn's oldest units) are dropped, the system prompt is kept, and what remains
is shifted down in the caches to the positions of a fresh conversation (cache.py), in
milliseconds. Room is made while the user talks, with space for an answer, so a trim
never delays one.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections.abc import Iterator

import torch

from app.model import memory_plan, registry
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
from app.model.qwen_omni import loader
from app.model.qwen_omni.cache import WarmContext
from app.model.qwen_omni.features import AudioFeaturizer, ImagePatcher
from app.model.qwen_omni.prompt import Kind, Layout
from app.model.qwen_omni.speech import Answer, AnswerConfig

log = logging.getLogger(__name__)

FAMILY = "qwen2.5-omni"
AUDIO_OUT_RATE = 24000
DEFAULT_VOICES = ("Chelsie", "Ethan")
# Before a checkpoint is loaded, the spec's VRAM figures are the 7B's memory plan.
SPEC_ENTRY = "qwen2.5-omni-7b"
# The token budget of a model attached without a plan (loaded some other way).
DEFAULT_TOKEN_BUDGET = memory_plan.QWEN_DEFAULT_CONTEXT


class QwenOmniBackend:
    """Qwen2.5-Omni on transformers' own classes; see the module docstring for threads."""

    def __init__(
        self,
        *,
        unit_ms: int = 1000,
        token_budget: int | None = None,
        max_answer_tokens: int = 512,
        device: str | None = None,
        image_max_pixels: int = 224 * 224 * 2,
        answer: AnswerConfig | None = None,
    ) -> None:
        if not 100 <= unit_ms <= 10000:
            raise ValueError("unit_ms must lie between 100 and 10000")
        self.spec = BackendSpec(
            family=FAMILY,
            unit_ms=unit_ms,
            audio_in_rate=16000,
            audio_out_rate=AUDIO_OUT_RATE,
            frames_per_unit=1,
            native_duplex=False,
            voices=DEFAULT_VOICES,
            accepts_reference_voice=False,
            vram_gib=registry.plan_vram_gib(SPEC_ENTRY),
        )
        self.requested_budget = token_budget  # None: the longest context that fits
        self.token_budget = token_budget  # the budget in force (set at load)
        self.context_note = ""  # which context the load chose, and why
        self.device = device
        self.answer_config = answer or AnswerConfig(max_answer_tokens=max_answer_tokens)
        self._featurize = AudioFeaturizer()
        self._patch = ImagePatcher(max_pixels=image_max_pixels)
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._loaded: loader.Loaded | None = None
        self._layout: Layout | None = None
        self.ctx: WarmContext | None = None
        self._speaker: dict | None = None
        self._turn = 0
        self._user_open = False
        self._answer: Answer | None = None
        self._answer_committed = True
        self._answer_turn = 0
        self._held: list = []  # (audio, image) of units that arrived during an answer
        self._response_id = 0
        self.last_answer: Answer | None = None  # for benchmarks and tests

    # --- lifecycle -------------------------------------------------------------------

    def load(self, source: ModelSource, quant: Quant, progress: Progress) -> None:
        """Load after the memory plan said it fits; with no token budget given, the budget
        is the longest context the device's free memory holds (`context_note` says)."""
        self.close()
        self.attach(loader.load(source, quant, progress, device=self.device,
                                context=self.requested_budget,
                                talker_headroom=self.answer_config.max_codes))

    def attach(self, loaded: loader.Loaded) -> None:
        """Use a model loaded by loader.py (a checkpoint, or random weights for benchmarks)."""
        self._loaded = loaded
        self._layout = Layout(self._loaded.tokenizer)
        if loaded.plan is not None:
            self.token_budget = loaded.plan.context
        elif self.token_budget is None:
            self.token_budget = DEFAULT_TOKEN_BUDGET
        self.context_note = loaded.context_note
        voices = tuple(self._loaded.model.speaker_map.keys())
        self.spec = dataclasses.replace(
            self.spec, voices=voices, vram_gib=self._vram_gib(loaded)
        )
        steps = self._loaded.flow_steps
        if steps and "num_steps" not in self.answer_config.voice:
            # A tiny model's folder asks for fewer flow steps (tiny.py says why).
            self.answer_config = dataclasses.replace(
                self.answer_config, voice={**self.answer_config.voice, "num_steps": steps})
        meta_min = self._loaded.min_answer_tokens
        if meta_min:
            # Random tiny models stop at once; their folder asks for a minimum length. With
            # `answer_codes` (tiny.py), speech that long on that much text: the random
            # thinker, which never picks its stop token, ends its text there, as a real
            # answer's would end.
            config = self.answer_config
            codes = self._loaded.answer_codes
            self.answer_config = dataclasses.replace(
                config,
                min_answer_tokens=max(config.min_answer_tokens, meta_min),
                min_codes=max(config.min_codes, meta_min + 1, codes),
                max_answer_tokens=(min(config.max_answer_tokens, meta_min) if codes
                                   else config.max_answer_tokens),
            )

    def _vram_gib(self, loaded: loader.Loaded) -> dict[Quant, float]:
        """GiB this checkpoint needs per quantization at this conversation's context, from
        its memory plan (the spec's figures before loading when there is none)."""
        if loaded.plan is None:
            return dict(self.spec.vram_gib)
        planner = memory_plan.Planner(FAMILY, loaded.model.config, device=str(loaded.device),
                                      talker_headroom=self.answer_config.max_codes,
                                      name=loaded.plan.model)
        return {q: planner.plan(q, self.token_budget).total_gib for q in Quant}

    def _require_loaded(self) -> loader.Loaded:
        if self._loaded is None:
            raise BackendError("the model is not loaded", hint="call load() first")
        return self._loaded

    def start(self, persona: Persona) -> None:
        loaded = self._require_loaded()
        speakers = loaded.model.speaker_map
        name = persona.voice.builtin or next(iter(speakers))
        if persona.voice.reference_audio is not None and not persona.voice.builtin:
            raise BackendError(
                "Qwen2.5-Omni speaks only with its built-in voices, not a reference recording",
                hint=f"pick one of: {', '.join(speakers)}",
            )
        if name not in speakers:
            raise BackendError(
                f"unknown speaker '{name}'",
                hint=f"available speakers: {', '.join(speakers)}",
            )
        with self._lock:
            self._speaker = speakers[name]
            self.ctx = None
            ctx = WarmContext(loaded.model, token_budget=self.token_budget,
                              talker_headroom=self.answer_config.max_codes)
            try:
                # The first prefill claims the whole context's memory (cache.py).
                ctx.append(self._layout.system(persona.role_prompt))
            except torch.OutOfMemoryError as exc:
                del ctx
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                gib = loaded.plan.total("context") / 2**30 if loaded.plan else float("nan")
                raise BackendError(
                    f"the conversation's context ({self.token_budget} tokens, {gib:.1f} GiB) "
                    "does not fit in the memory left after the model",
                    hint="pick a smaller quantization or model, or close other programs "
                         "using the GPU",
                ) from exc
            self.ctx = ctx
            self._turn = 0
            self._user_open = False
            self._answer = None
            self._answer_committed = True
            self._held = []

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.ctx = None
            self._answer = None
            self.last_answer = None
            self._loaded = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- interruption ------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop the answer in progress within one generation step. Any thread."""
        self._stop.set()

    # --- the conversation ------------------------------------------------------------

    def _require_started(self) -> WarmContext:
        if self.ctx is None:
            raise BackendError("no conversation", hint="call start(persona) first")
        return self.ctx

    def step(self, unit: Unit, control: Control) -> Iterator[Output]:
        ctx = self._require_started()
        if control.barge_in or control.force_listen:
            self.interrupt()
        audio = self._featurize(unit.audio, unit.sample_rate, ctx.dtype)
        image = self._patch(unit.frames[-1].pixels) if unit.frames else None
        if self._answer_active():
            # The answer's tokens occupy the cache's tail until it is committed, so a
            # unit heard meanwhile waits and opens the user's next turn.
            self._held.append((audio, image))
            return iter([Output(decision=Decision.LISTEN)])
        self._settle_answer()
        with self._lock:
            pending = []
            for held_audio, held_image in [*self._held, (audio, image)]:
                if not self._user_open:
                    self._turn += 1
                    pending.append(self._layout.user_open(self._turn))
                    self._user_open = True
                pending.append(self._layout.unit(self._turn, held_audio, held_image))
            self._held = []
            # Room for these units, the next one and an answer, made now while the user
            # talks: whatever a trim costs (milliseconds shifted, seconds where a model's
            # rope forces a fresh prefill, cache.py) is then never added to an answer's
            # delay. With room for the next unit too, the unit that ends a turn finds it.
            next_unit = max(seg.length for seg in pending)
            ctx.trim(extra=sum(seg.length for seg in pending) + next_unit + self._answer_room())
            ctx.extend(pending)
        if not control.turn_ended or control.force_listen:
            return iter([Output(decision=Decision.LISTEN)])
        return self._respond()

    def retract(self) -> None:
        """Take the last answer back as if it had never begun: the user was only pausing.

        For speculative turn-taking: the session may start an answer before the end of
        the user's turn is certain, and retracts it when the user goes on. The answer's
        close-of-turn and words leave the context and the user's turn is open again, so
        their next units continue it. Call from the session thread after the answer's
        iterator has ended (interrupt() stops it within one step).
        """
        self._require_started()
        self._stop.set()
        with self._lock:
            ctx = self.ctx
            start = self._answer_start() if self._answer is not None else None
            if start is None:
                return
            ctx.rollback_to(start - 1)  # drop the user_close and everything after it
            self._turn = self._answer_turn
            self._user_open = True
            self._answer = None
            self._answer_committed = True

    def _answer_room(self) -> int:
        """Tokens an answer may add: the close of the user's turn and the longest answer."""
        return self._layout.user_close(self._turn).length + self.answer_config.max_answer_tokens

    def _answer_active(self) -> bool:
        """An answer is still being generated (its iterator neither done nor stopped)."""
        a = self._answer
        return (
            a is not None
            and not self._answer_committed
            and not a.state.finished
            and not a.state.interrupted
            and not self._stop.is_set()
        )

    def _respond(self) -> Iterator[Output]:
        ctx = self._require_started()
        with self._lock:
            ctx.trim(extra=self._answer_room())  # step() made the room already, as a rule
            logits = ctx.append(self._layout.user_close(self._turn))
            self._user_open = False
            # A fresh flag per answer: a late interrupt() or heard() can only stop the
            # answer it was meant for, and a stopped answer can never resume.
            self._stop = threading.Event()
            self._response_id += 1
            answer = Answer(ctx, self._layout, self._speaker, self.answer_config,
                            self._stop, self._lock)
            self._answer = answer
            self._answer_turn = self._turn
            self.last_answer = answer
            self._answer_committed = False
        return self._stream(answer, logits, self._response_id)

    def _stream(self, answer: Answer, logits: torch.Tensor, rid: int) -> Iterator[Output]:
        yield Output(decision=Decision.SPEAK)
        seq = 0
        for ev in answer.run(logits):
            if ev.kind == "text":
                yield Output(text=ev.text)
            elif ev.kind == "speech":
                chunk = SpeechChunk(ev.audio, AUDIO_OUT_RATE, rid, seq, ev.text)
                seq += 1
                yield Output(speech=chunk)
            elif ev.kind == "done":
                with self._lock:
                    if self._answer is answer:
                        self._commit(answer.state.token_ids, answer.state.text)
                yield Output(decision=Decision.END_OF_TURN)
            elif ev.kind == "interrupted":
                return

    def _settle_answer(self) -> None:
        """Close an interrupted answer nobody reported on: what was yielded was heard."""
        with self._lock:
            if self._answer is not None and not self._answer_committed:
                self._commit_text(self._answer.state.spoken_text)

    def _answer_start(self) -> int | None:
        """Index just past the user_close that opened the last answer, or None when that
        turn is no longer in the context (trimmed away)."""
        ctx = self._require_started()
        for i in range(len(ctx.entries) - 1, -1, -1):
            seg = ctx.entries[i].segment
            if seg.kind is Kind.USER_CLOSE:
                return i + 1 if seg.turn == self._answer_turn else None
        return None

    def _commit(self, token_ids: list[int], text: str) -> None:
        """Make `token_ids` the last answer's words in the context, keeping any segments
        that came after it (a turn the user opened by barging in)."""
        ctx = self._require_started()
        self._answer_committed = True
        start = self._answer_start()
        if start is None:
            log.info("the answered turn was trimmed away; nothing to correct")
            return
        entries = ctx.entries
        if start < len(entries) and entries[start].segment.kind is Kind.ASSISTANT:
            after = [e.segment for e in entries[start + 1 :]]
        else:
            after = [e.segment for e in entries[start:]]
        ctx.rollback_to(start)
        ctx.extend([self._layout.assistant(self._answer_turn, token_ids, text), *after])

    def _commit_text(self, played: str) -> None:
        ids: list[int] = []
        if self._answer is not None:
            gen = self._answer.state.token_ids
            # Prefer the model's own tokens for the played prefix; re-encode otherwise.
            for n in range(len(gen), -1, -1):
                if self._layout.decode(gen[:n]) == played:
                    ids = gen[:n]
                    break
            else:
                ids = self._layout.encode(played)
        else:
            ids = self._layout.encode(played)
        self._commit(ids, played)

    def heard(self, played_text: str) -> None:
        """Keep only `played_text` of the last answer in the context (after a barge-in)."""
        self._require_started()
        self._stop.set()
        with self._lock:
            self._commit_text(played_text or "")
