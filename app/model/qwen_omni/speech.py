"""One spoken answer, streamed: thinker tokens, talker codes and token2wav in lockstep.

transformers' top-level `generate` runs the thinker to the end, then the talker, then
token2wav, so the first sample exists only when everything is done. Here the three are
driven step by step on the warm caches (cache.py):

1. The thinker emits token g_i and is fed it; that forward gives g_i's embedding and
   last hidden state, the talker's "reply" input for that token.
2. The talker, whose cache already holds the whole conversation, is first given
   [speaker text-bos + codec pad] and [reply_0 + codec bos] (as `generate` does), then
   one step per code: codec embedding of the previous code + the next reply input. So it
   trails the thinker by one token; when the thinker stops, the reply stream continues
   with the text-eos embedding, then text-pad, until the talker ends its codes.
3. Codes go to a VoiceStream (voice.py), which returns waveform chunks as soon as they
   are final.

`stop` (a threading.Event) is checked before every forward pass, so an interruption
from another thread ends the answer within one generation step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from app.model.qwen_omni.cache import WarmContext, thinker_pass
from app.model.qwen_omni.prompt import Layout
from app.model.qwen_omni.voice import VoiceStream


@dataclass
class AnswerConfig:
    max_answer_tokens: int = 512
    min_answer_tokens: int = 0
    min_codes: int = 0
    max_codes: int = 4096
    thinker_temperature: float = 0.0  # 0 = greedy
    talker_temperature: float = 0.9
    talker_top_k: int = 40
    talker_top_p: float = 0.8
    talker_repetition_penalty: float = 1.05
    # Best-effort text alignment of chunks: the talker reads the text far ahead of the
    # speech, so which words a chunk speaks is estimated from a speaking rate (50 codes/s,
    # ~3.3 text tokens/s of speech).
    codes_per_token: float = 15.0
    seed: int = 0
    voice: dict = field(default_factory=dict)  # VoiceStream keyword arguments


@dataclass
class Event:
    kind: str  # "text" | "speech" | "done" | "interrupted"
    text: str = ""
    audio: np.ndarray | None = None
    first_token_index: int = 0  # speech: index of the first text token of its span


@dataclass
class AnswerState:
    """What an answer has produced so far, for commit and `heard`."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    spoken_text: str = ""  # text spans of the chunks already yielded
    codes: int = 0
    chunks: int = 0
    thinker_done_at: float | None = None
    first_chunk_at: float | None = None
    samples: int = 0
    finished: bool = False
    interrupted: bool = False


def _sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
            gen: torch.Generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if 0 < top_p < 1:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        drop = cum - sorted_p > top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


class Answer:
    """Generates one answer on `ctx`, which must end with the user_close segment."""

    def __init__(
        self,
        ctx: WarmContext,
        layout: Layout,
        speaker: dict,
        config: AnswerConfig,
        stop: threading.Event,
        lock: threading.RLock,
    ) -> None:
        self.ctx = ctx
        self.layout = layout
        self.speaker = speaker
        self.cfg = config
        self.stop = stop
        self.lock = lock
        self.state = AnswerState()
        model = ctx.model
        self.thinker = model.thinker
        self.talker = model.talker
        self.voice = VoiceStream(model.token2wav, speaker, seed=config.seed, **config.voice)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.device = ctx.device
        tk = self.talker
        self.talker_stop = {tk.codec_eos_token, tk.codec_pad_token}
        with torch.no_grad():
            self._init_embeds(speaker)
        self._decoded = ""
        self._spoken_tokens = 0
        self._eos_sent = False

    def _init_embeds(self, speaker: dict) -> None:
        tk = self.talker
        emb = self.thinker.get_input_embeddings()
        ids = torch.tensor([tk.text_eos_token, tk.text_pad_token, speaker["bos_token"]],
                           device=self.device)
        # Each (1, 1, hidden): one position of one batch row.
        self.text_eos_embed, self.text_pad_embed, self.text_bos_embed = emb(ids)[:, None, None]
        codec = torch.tensor([tk.codec_pad_token, tk.codec_bos_token], device=self.device)
        self.codec_pad_embed, self.codec_bos_embed = tk.get_input_embeddings()(codec)[:, None, None]

    # --- thinker -----------------------------------------------------------------------

    def _next_token(self, logits: torch.Tensor, i: int) -> int:
        if i < self.cfg.min_answer_tokens:
            logits = logits.clone()
            logits[list(self.layout.stop_ids)] = float("-inf")
        return _sample(logits, self.cfg.thinker_temperature, 0, 1.0, self.gen)

    @torch.no_grad()
    def _feed_thinker(self, token: int, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([[token]], device=self.device)
        logits, hidden = thinker_pass(self.thinker, ids, torch.full((3, 1, 1), pos,
                                                                    device=self.device),
                                      self.ctx.cache)
        return logits, self.ctx.talker_inputs(ids, hidden)

    def _text_delta(self) -> str:
        text = self.layout.decode(self.state.token_ids)
        if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the rest
            return ""
        delta = text[len(self._decoded):] if text.startswith(self._decoded) else ""
        self._decoded = text
        self.state.text = text
        return delta

    # --- talker ------------------------------------------------------------------------

    @torch.no_grad()
    def _talker_forward(self, embeds: torch.Tensor, pos: int) -> torch.Tensor:
        n = embeds.shape[1]
        position = (torch.arange(n, device=self.device) + pos).view(1, 1, n).expand(3, 1, n)
        out = self.talker(
            inputs_embeds=embeds.to(self.talker.dtype),
            position_ids=position,
            cache=self.ctx.talker_cache,
            use_cache=True,
        )
        return out.logits[0, -1].float()

    def _next_code(self, logits: torch.Tensor, history: list[int]) -> int:
        logits = logits.clone()
        logits[self.talker.codec_bos_token] = float("-inf")
        if len(history) < self.cfg.min_codes:
            logits[list(self.talker_stop)] = float("-inf")
        pen = self.cfg.talker_repetition_penalty
        if pen != 1.0 and history:
            seen = torch.tensor(sorted(set(history)))
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / pen, vals * pen)
        return _sample(logits, self.cfg.talker_temperature, self.cfg.talker_top_k,
                       self.cfg.talker_top_p, self.gen)

    # --- speech ------------------------------------------------------------------------

    def _span_end(self, final: bool) -> int:
        n = len(self.state.token_ids)
        if final:
            return n
        spoken_codes = self.voice.emitted_frames / self.voice.repeats
        return min(n, int(spoken_codes / self.cfg.codes_per_token))

    def _speech_event(self, audio: np.ndarray, final: bool) -> Event | None:
        if audio is None or audio.size == 0:
            return None
        start = self._spoken_tokens
        end = max(start, self._span_end(final))
        span = self.layout.decode(self.state.token_ids[start:end])
        self._spoken_tokens = end
        self.state.spoken_text += span
        self.state.chunks += 1
        self.state.samples += audio.size
        return Event("speech", text=span, audio=audio, first_token_index=start)

    def _push_code(self, code: int, codes: list[int]) -> Event | None:
        codes.append(code)
        self.voice.push(code)
        self.state.codes = len(codes)
        return self._speech_event(self.voice.pull(), final=False)

    # --- the loop ------------------------------------------------------------------------

    def run(self, first_logits: torch.Tensor, clock=None) -> Iterator[Event]:
        """Yields text and speech events; ends with "done" or "interrupted"."""
        import time

        clock = clock or time.perf_counter
        cfg = self.cfg
        base = self.ctx.next_pos  # the answer's first token sits here
        logits = first_logits
        codes: list[int] = []
        thinker_open = True
        talker_open = True
        reply_queue: list[torch.Tensor] = []
        talker_pos = base
        i = 0
        while talker_open or thinker_open:
            if self.stop.is_set():
                self.state.interrupted = True
                yield Event("interrupted", text=self.state.text)
                return
            events: list[Event] = []
            with self.lock:
                if thinker_open:
                    token = self._next_token(logits, i)
                    if token in self.layout.stop_ids or i >= cfg.max_answer_tokens:
                        thinker_open = False
                        self.state.thinker_done_at = clock()
                    else:
                        self.state.token_ids.append(token)
                        logits, reply = self._feed_thinker(token, base + i)
                        reply_queue.append(reply)
                        i += 1
                        if delta := self._text_delta():
                            events.append(Event("text", text=delta))
                if talker_open:
                    ev, talker_open, talker_pos = self._talker_step(
                        codes, reply_queue, thinker_open, talker_pos
                    )
                    if ev is not None:
                        events.append(ev)
                    if not talker_open and thinker_open:
                        # The voice has ended: whatever the thinker writes from here on
                        # would never be spoken (a random tiny model wrote hundreds of
                        # such tokens per answer, shown as subtitles and costing seconds).
                        thinker_open = False
                        self.state.thinker_done_at = clock()
            for ev in events:
                if ev.kind == "speech" and self.state.first_chunk_at is None:
                    self.state.first_chunk_at = clock()
                yield ev
        with self.lock:
            last = self._speech_event(self.voice.finish(), final=True)
        if last is not None:
            if self.state.first_chunk_at is None:
                self.state.first_chunk_at = clock()
            yield last
        self.state.finished = True
        yield Event("done", text=self.state.text)

    @torch.no_grad()
    def _talker_step(
        self, codes: list[int], queue: list[torch.Tensor], thinker_open: bool, pos: int
    ) -> tuple[Event | None, bool, int]:
        """One talker code if its input is available; returns (event, still open, pos)."""
        if not codes and pos == self.ctx.next_pos:
            if not queue:
                if thinker_open:
                    return None, True, pos
                queue.append(self.text_eos_embed)  # an empty answer still gets spoken out
            # Prompt tail, as generate builds it: text-bos + codec pad, reply_0 + codec bos.
            head = torch.cat(
                [self.text_bos_embed + self.codec_pad_embed, queue.pop(0) + self.codec_bos_embed],
                dim=1,
            )
            logits = self._talker_forward(head, pos)
            pos += 2
        else:
            if queue:
                reply = queue.pop(0)
            elif thinker_open:
                return None, True, pos  # wait for the thinker's next token
            else:
                reply = self.text_pad_embed if self._eos_sent else self.text_eos_embed
                self._eos_sent = True
            prev = torch.tensor([[codes[-1]]], device=self.device)
            embed = self.talker.get_input_embeddings()(prev) + reply
            logits = self._talker_forward(embed, pos)
            pos += 1
        code = self._next_code(logits, codes)
        if code in self.talker_stop or len(codes) >= self.cfg.max_codes:
            return None, False, pos
        return self._push_code(code, codes), True, pos
