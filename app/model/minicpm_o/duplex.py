"""One MiniCPM-o duplex conversation on the LLM: prefill a unit, let the model decide, generate.

Per 1 s unit (protocol.py lays out the tokens), as OpenBMB's `MiniCPMODuplex` does:

1. Prefill the unit (<unit>, frame embeddings, audio embeddings) on top of the KV cache
   that holds the whole conversation so far; the logits after its last position are the
   model's decision point.
2. Generate at most `max_unit_tokens` steps. Step j = max - 1 is never sampled: the
   unit is closed with <|chunk_eos|>. For the first `force_listen_count` units of a
   conversation the model is given <|listen|> (it hears before it may talk). Otherwise
   the official decode picks a token (`choose`); a <|listen|> while the model's turn is
   open becomes <|tts_bos|> (the official rule: the model keeps its turn until it says
   <|turn_eos|>, so it never yields mid-turn by itself; the app's barge-in makes it).
   <|listen|>, <|chunk_eos|> and <|chunk_tts_eos|> end the unit; <|turn_eos|> closes the
   turn and generation goes on (usually to <|listen|>).
3. Feed the terminator and </unit>, then let the sliding window drop the oldest units
   if the cache has grown past its high mark (the system prefix is kept; the kept units'
   keys are turned to their new positions, as the official window does).

Forced listening (a barge-in, a held "be quiet" button): the unit gets <|listen|>
without decoding; when the model's turn is open it is first closed with <|turn_eos|>,
so the cache reads `... <|turn_eos|> <|listen|> </unit>` (the official demo's
force-listen does the same).

`choose` is the official decode: a first draw from the unscaled distribution may pick
<|chunk_eos|> (the model's own choice to end the unit; drawn as one uniform number
against p(chunk_eos), the same odds); otherwise <|chunk_eos|>,
<|tts_pad|> and the tokenizer's bad ids are forbidden, the repetition penalty divides the
logits of the tokens chosen in the last 512 draws (sign-insensitive, as in the official
code), <|turn_eos|> is damped by the length penalty, and the token is drawn with
temperature, top-k and top-p, or by argmax in greedy mode (tests, parity).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from app.model.minicpm_o.protocol import Embeds, Piece, SpecialIds, Tokens, Window

# A test instrument's say in the decode: (unit index, step j, turn open) -> {id: bias}.
Steer = Callable[[int, int, bool], dict[int, float]]


@dataclass(frozen=True)
class Sampling:
    """The official duplex generation settings (MiniCPMODuplex's defaults; the demo's
    force_listen_count of 3)."""

    greedy: bool = False
    temperature: float = 0.7
    top_k: int = 20
    top_p: float = 0.8
    repetition_penalty: float = 1.05
    repetition_window: int = 512
    length_penalty: float = 1.1
    max_unit_tokens: int = 20
    force_listen_count: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_unit_tokens < 2:
            raise ValueError("max_unit_tokens must be at least 2 (a decision and a chunk end)")
        if self.temperature <= 0 and not self.greedy:
            raise ValueError("temperature must be positive (or use greedy)")
        if self.repetition_penalty <= 0 or self.length_penalty <= 0:
            raise ValueError("the penalties must be positive")


@dataclass(frozen=True)
class UnitResult:
    """What the model did with one unit.

    `tokens`: every token after the prefill, in cache order (chosen or given), </unit>
    last. `text_ids`: the words of this unit (the official text: tokens after the first
    step, special ones left out when decoded). `speaking`: the model's own turn was open
    in this unit (it said something, or a turn went on through it); a turn closed by a
    forced listen before the model said anything is not speaking. `turn_ended`: it said
    <|turn_eos|>. `forced`: the unit was given <|listen|>; `closed_turn`: a forced
    listen closed an open turn. `stopped`: interrupted mid-unit. `turn_open`: the
    model's turn is still open after the unit (words after a <|turn_eos|> reopen it).

    `text_hidden`: what the speech decoder needs besides `text_ids`: the LLM's last
    hidden state (after its final norm) at each of them, [len(text_ids), llm_hidden],
    on the LLM's device; None when there are no words. It is only ever made for words
    the model speaks (a listening unit feeds no generated token); do not keep results
    with it beyond the unit (`without_hidden()`), they would hold device memory.
    """

    index: int
    tokens: tuple[int, ...]
    text_ids: tuple[int, ...]
    speaking: bool
    turn_ended: bool
    forced: bool
    closed_turn: bool = False
    stopped: bool = False
    prefill_positions: int = 0
    dropped: int = 0
    turn_open: bool = False
    text_hidden: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def without_hidden(self) -> UnitResult:
        """The same record without the device tensor (for keeping a history)."""
        return replace(self, text_hidden=None)


@dataclass
class DuplexState:
    """Everything one conversation carries from unit to unit."""

    cache: object = None
    units: int = 0
    turn_open: bool = False
    history: list[int] = field(default_factory=list)  # the decode's repetition window


class DuplexDecoder:
    """The unit loop over a Qwen3ForCausalLM; see the module docstring."""

    def __init__(self, llm: torch.nn.Module, ids: SpecialIds, *, sampling: Sampling | None = None,
                 forbidden: Sequence[int] = (), window: Window | None = None,
                 steer: Steer | None = None) -> None:
        self.llm = llm
        self.ids = ids
        self.sampling = sampling or Sampling()
        self.window = window or Window()
        self.steer = steer
        self.vocab = int(llm.get_output_embeddings().weight.shape[0])
        # <|chunk_eos|> is forbidden after the first draw (it may only be the model's
        # unscaled choice); <|tts_pad|> always.
        self.forbidden = torch.tensor(sorted(t for t in {ids.chunk_eos, ids.tts_pad, *forbidden}
                                             if 0 <= t < self.vocab), dtype=torch.long)
        rotary = llm.model.rotary_emb
        self._inv_freq = rotary.inv_freq.detach().float()
        self._rng = torch.Generator(device="cpu")
        self.state = DuplexState()
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # --- state -------------------------------------------------------------------------

    def reset(self) -> None:
        from transformers import DynamicCache

        self.state = DuplexState(cache=DynamicCache(config=self.llm.config))
        self.window.reset(0)
        self._rng.manual_seed(self.sampling.seed)

    @property
    def cache_length(self) -> int:
        return int(self.state.cache.get_seq_length())

    def start(self, prefix: Sequence[Piece]) -> None:
        """A new conversation: a fresh cache holding the protected system prefix."""
        self.reset()
        if prefix:
            self._feed(self._embed(prefix), logits=False)
        self.window.reset(self.cache_length)

    # --- feeding -------------------------------------------------------------------------

    def _embed(self, pieces: Sequence[Piece]) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        parts = []
        for piece in pieces:
            if isinstance(piece, Tokens):
                ids = torch.tensor(piece.ids, dtype=torch.long, device=table.weight.device)
                parts.append(table(ids))
            elif isinstance(piece, Embeds):
                parts.append(piece.tensor.to(device=table.weight.device, dtype=table.weight.dtype))
        return torch.cat(parts, dim=0)

    def _feed_word(self, token: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed one generated token: the logits after it (float32, [vocab]) and the LLM's
        last hidden state at it ([llm_hidden], after the final norm: the speech decoder's
        input). The same computation as `_feed` with logits (the decoder stack, then the
        head on the last position), keeping the hidden state it passes through."""
        embeds = self._embed([Tokens((token,))])
        past = self.cache_length
        position_ids = torch.arange(past, past + 1, device=embeds.device).unsqueeze(0)
        out = self.llm.model(inputs_embeds=embeds.unsqueeze(0), position_ids=position_ids,
                             cache=self.state.cache, use_cache=True)
        self.state.cache = out.cache
        hidden = out.last_hidden_state[:, -1:]
        logits = self.llm.get_output_embeddings()(hidden)
        return logits[0, -1].float(), hidden[0, -1].detach()

    def _feed(self, embeds: torch.Tensor, *, logits: bool = True) -> torch.Tensor | None:
        """Append positions to the cache; the logits after the last one (float32, [vocab])."""
        past = self.cache_length
        n = int(embeds.shape[0])
        position_ids = torch.arange(past, past + n, device=embeds.device).unsqueeze(0)
        # Without logits, the decoder stack alone: the 151,748-row head is most of a
        # small model's step.
        run = self.llm if logits else self.llm.model
        extra = {"logits_to_keep": 1} if logits else {}
        out = run(inputs_embeds=embeds.unsqueeze(0), position_ids=position_ids,
                  cache=self.state.cache, use_cache=True, **extra)
        self.state.cache = out.cache
        return out.logits[0, -1].float() if logits else None

    def _feed_ids(self, *token_ids: int, logits: bool = True) -> torch.Tensor | None:
        return self._feed(self._embed([Tokens(tuple(token_ids))]), logits=logits)

    # --- one unit --------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, prefill: Sequence[Piece], *, force_listen: bool = False,
             stop: threading.Event | None = None) -> UnitResult:
        """Run one unit (module docstring). `force_listen`: the flow says listen now.
        `stop`, when set mid-unit (from any thread), ends the unit as a forced listen
        within one generation step; it is cleared once acted on."""
        ids, s, st = self.ids, self.sampling, self.state
        index = st.units
        st.units += 1
        start_len = self.cache_length
        initial = index < s.force_listen_count
        forced = force_listen or initial
        # A forced unit never decodes: its prefill needs no logits.
        logits = self._feed(self._embed(prefill), logits=not forced)
        prefill_positions = self.cache_length - start_len
        closed = False
        if force_listen and st.turn_open:
            self._feed_ids(ids.turn_eos, logits=False)
            st.turn_open = False
            closed = True
        was_open = st.turn_open  # a turn that goes on into this unit
        tokens: list[int] = [ids.turn_eos] if closed else []
        text_ids: list[int] = []
        text_hidden: list[torch.Tensor] = []
        turn_ended = stopped = False
        end: int | None = None
        for j in range(s.max_unit_tokens):
            if j == s.max_unit_tokens - 1:
                end = ids.chunk_eos
                break
            if stop is not None and stop.is_set() and not forced:
                stop.clear()
                stopped = forced = True
                if st.turn_open:
                    self._feed_ids(ids.turn_eos, logits=False)
                    tokens.append(ids.turn_eos)
                    st.turn_open = False
                    closed = True
                end = ids.listen
                break
            if forced:
                token = ids.listen
            else:
                token = self.choose(logits, index, j)
                if token == ids.listen and st.turn_open:
                    token = ids.tts_bos
            if token in ids.chunk_terminators:
                end = token
                break
            st.turn_open = True
            was_open = True
            tokens.append(token)
            logits, hidden = self._feed_word(token)
            if token == ids.turn_eos:
                st.turn_open = False
                turn_ended = True
            if j != 0:
                text_ids.append(token)
                text_hidden.append(hidden)
        assert end is not None
        # The terminator and </unit> in one pass (the official code feeds them one by one;
        # the cache holds the same positions).
        self._feed_ids(end, ids.unit_end, logits=False)
        tokens += [end, ids.unit_end]
        dropped = self.window.add_unit(self.cache_length - start_len)
        if dropped:
            self._drop(self.window.prefix, dropped)
        return UnitResult(index=index, tokens=tuple(tokens), text_ids=tuple(text_ids),
                          speaking=was_open, turn_ended=turn_ended, forced=forced,
                          closed_turn=closed, stopped=stopped,
                          prefill_positions=prefill_positions, dropped=dropped,
                          turn_open=st.turn_open,
                          text_hidden=torch.stack(text_hidden) if text_hidden else None)

    # --- the decode --------------------------------------------------------------------------

    def choose(self, logits: torch.Tensor, unit: int = 0, j: int = 0) -> int:
        """The official decode of one token (module docstring); records it in the
        repetition history unless it is the model's own <|chunk_eos|>."""
        ids, s = self.ids, self.sampling
        row = logits.float().reshape(-1).cpu().clone()
        if self.steer is not None:
            for tid, bias in self.steer(unit, j, self.state.turn_open).items():
                row[tid] += bias
        if self._model_ends_unit(row):
            return ids.chunk_eos
        row[self.forbidden] = float("-inf")
        history = self.state.history
        if s.repetition_penalty != 1.0 and history:
            seen = torch.tensor(sorted({t for t in history[-s.repetition_window:]
                                        if 0 <= t < row.numel()}), dtype=torch.long)
            row[seen] = row[seen] / s.repetition_penalty
        if s.length_penalty != 1.0:
            t = ids.turn_eos
            row[t] = row[t] / s.length_penalty if row[t] > 0 else row[t] * s.length_penalty
        token = int(torch.argmax(row)) if s.greedy else self._sample(row / s.temperature)
        history.append(token)
        del history[:-s.repetition_window]
        return token

    def _sample(self, row: torch.Tensor) -> int:
        """Draw from the top-k logits, cut to the smallest head whose probability passes
        top_p (the official filter, computed on the k survivors only: what it removes
        from the whole row beyond them is already out)."""
        s = self.sampling
        if 0 < s.top_k < row.numel():
            values, order = torch.topk(row, s.top_k)
        else:
            values, order = torch.sort(row, descending=True)
        if 0.0 < s.top_p < 1.0:
            cumulative = torch.cumsum(torch.softmax(values, dim=-1), dim=-1)
            remove = cumulative > s.top_p
            remove[1:] = remove[:-1].clone()
            remove[0] = False
            values = values.masked_fill(remove, float("-inf"))
        probs = torch.softmax(values, dim=-1)
        return int(order[torch.multinomial(probs, 1, generator=self._rng)])

    def _model_ends_unit(self, row: torch.Tensor) -> bool:
        """The official first draw from the unscaled distribution, whose only use is to
        see whether it is <|chunk_eos|>: that happens with probability p(chunk_eos), so
        one uniform number decides it (the same odds as a draw over the whole vocabulary,
        at a fraction of the cost). Greedy: whether <|chunk_eos|> is the argmax."""
        end = self.ids.chunk_eos
        if self.sampling.greedy:
            return int(torch.argmax(row)) == end
        # Shifted and floored at e^-80: a wider spread would be summed in subnormal floats,
        # some fifty times slower on a CPU, for terms that cannot change the odds.
        shifted = (row - row.max()).clamp_(min=-80.0)
        p_end = float(shifted[end].exp() / shifted.exp().sum())
        return float(torch.rand((), generator=self._rng)) < p_end

    # --- the window ------------------------------------------------------------------------

    def _drop(self, start: int, count: int) -> None:
        """Remove cache positions [start, start + count) and turn the later keys back by
        `count` positions (RoPE composes: rotating by -count moves a key from p to
        p - count), so the cache stays one contiguous run of positions."""
        inv = self._inv_freq
        for layer in self.state.cache.layers:
            keys, values = layer.keys, layer.values
            if keys is None or keys.numel() == 0:
                continue
            tail_k = keys[:, :, start + count:]
            if tail_k.shape[2]:
                tail_k = _rotate(tail_k, -count, inv)
            layer.keys = torch.cat([keys[:, :, :start], tail_k], dim=2)
            layer.values = torch.cat([values[:, :, :start], values[:, :, start + count:]], dim=2)


def _rotate(keys: torch.Tensor, shift: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate rotary-embedded keys by `shift` positions (the rotate-half layout)."""
    angle = shift * inv_freq.to(keys.device)
    emb = torch.cat((angle, angle), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    k = keys.float()
    half = k.shape[-1] // 2
    rotated = torch.cat((-k[..., half:], k[..., :half]), dim=-1)
    return (k * cos + rotated * sin).to(keys.dtype)
