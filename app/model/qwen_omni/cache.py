"""The warm conversation: thinker (and mirrored talker) caches, positions, trimming.

Every segment (prompt.py) is prefilled into the thinker as soon as it exists, with
explicit multimodal rotary positions: `thinker.get_rope_index` on the chunk alone plus
the running offset (the next free position). Leaving positions to the library is
wrong for a chunk holding a new image (tests/test_qwen_prefill.py shows it).

The talker is kept warm too. For speech, Qwen2.5-Omni's talker reads the whole
conversation as its own prompt: per token the thinker's input embedding (zeroed on
audio/image placeholders) plus the thinker's last hidden state, at the thinker's
positions. Those are exactly what a thinker prefill computes, so each prefill feeds the
talker's cache in the same breath, and at the end of a turn only the answer itself is
left for the talker to process. The two caches always hold the same token count at
segment boundaries, so one rollback serves both.

Both caches reserve their memory for a full context when the conversation starts
(reserved_cache.py): the thinker the token budget plus the few tokens that close a turn,
the talker that plus the codes of the longest answer. A conversation's memory is then
flat from its first unit on, and one that cannot fit fails at its start.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import rotate_half

from app.model.qwen_omni.prompt import Kind, Segment
from app.model.reserved_cache import Move, reserved_cache

# Tokens past the budget a context may hold for a moment: the close of a turn and the
# end of an answer are appended after the budget check that made room for the answer.
BUDGET_SLACK = 64
# Turns whose inputs are kept besides the newest: the backend rolls back and prefills
# again only within the last answer and the user turn it answered.
SETTLED_AFTER_TURNS = 2
MEDIA_RELEASED = "media_released"  # in Segment.extra: its audio and frame were let go
# Tokens per forward pass when prefilling many segments at once (after a trim). The
# largest pass sets the working memory (memory_plan._qwen_working): at 1024 tokens the 7B's
# activations take 0.15 GiB, at 2048 twice that, which an 8 GiB card does not have.
PREFILL_CHUNK_TOKENS = 1024


def reserved_tokens(token_budget: int, talker_headroom: int) -> tuple[int, int]:
    """Tokens the thinker's and the talker's caches reserve for a conversation. During an
    answer the talker's cache also holds the answer's codes (up to `talker_headroom`)."""
    thinker = token_budget + BUDGET_SLACK
    return thinker, thinker + talker_headroom + 2  # + the talker's two-token answer prompt


def thinker_pass(thinker, ids: torch.Tensor, positions: torch.Tensor, cache, **kwargs
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One thinker forward: (the last position's next-token logits as float32, the final
    hidden states). The head runs on the last position only: the logits of a whole
    prefill pass (tokens × 152k vocabulary) would cost more memory than its activations,
    and only the next token's are read."""
    out = thinker.model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True,
                        **kwargs)
    hidden = out.last_hidden_state
    logits = thinker.lm_head(hidden[:, -1:])
    return logits[0, -1].float(), hidden


def truncate_cache(cache, length: int) -> None:
    """Drop cached tokens past `length` (transformers 5 crops by a negative count)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


@dataclass
class Prefilled:
    logits: torch.Tensor  # (vocab,) next-token logits after the chunk, float32
    talker_inputs: torch.Tensor  # (1, n, hidden): embedding + last hidden per token
    positions: torch.Tensor  # (3, 1, n)


@dataclass
class _Entry:
    segment: Segment
    end_len: int  # cache length after this segment
    end_pos: int  # next free rotary position after this segment


class WarmContext:
    """The conversation as the model holds it, kept valid after every call."""

    def __init__(
        self,
        model,
        *,
        token_budget: int = 24000,
        trim_to: float = 0.75,
        mirror_talker: bool = True,
        talker_headroom: int = 4096,
        shift_on_trim: bool = True,
    ) -> None:
        self.model = model
        self.thinker = model.thinker
        self.talker = model.talker if mirror_talker else None
        self.device = next(self.thinker.parameters()).device
        self.dtype = self.thinker.get_input_embeddings().weight.dtype
        cfg = self.thinker.config
        self._mm_ids = torch.tensor(
            [cfg.audio_token_index, cfg.image_token_index, cfg.video_token_index]
        )
        if token_budget < 64:
            raise ValueError("token_budget must be at least 64 tokens")
        self.token_budget = token_budget
        self.trim_to = trim_to
        thinker_tokens, talker_tokens = reserved_tokens(token_budget, talker_headroom)
        self.cache = reserved_cache(cfg.text_config.num_hidden_layers, thinker_tokens)
        self.talker_cache = (reserved_cache(self.talker.config.num_hidden_layers, talker_tokens)
                             if self.talker is not None else None)
        self.entries: list[_Entry] = []
        self.last_logits: torch.Tensor | None = None
        self.trims = 0
        # How each cache's keys move down positions on a trim; None: prefill again.
        self._shifts: list[tuple] | None = None
        if shift_on_trim:
            shifts = [(self.cache, RotaryShift.of(self.thinker))]
            if self.talker is not None:
                shifts.append((self.talker_cache, RotaryShift.of(self.talker)))
            if all(shift is not None for _, shift in shifts):
                self._shifts = shifts

    # --- bookkeeping -----------------------------------------------------------------

    @property
    def length(self) -> int:
        return self.entries[-1].end_len if self.entries else 0

    @property
    def next_pos(self) -> int:
        return self.entries[-1].end_pos if self.entries else 0

    @property
    def segments(self) -> list[Segment]:
        return [e.segment for e in self.entries]

    def reset(self) -> None:
        # The reservations stay: a new conversation fills the same buffers again.
        self.cache.reset()
        if self.talker_cache is not None:
            self.talker_cache.reset()
        self.entries = []
        self.last_logits = None

    # --- prefill ---------------------------------------------------------------------

    @torch.no_grad()
    def forward_chunk(self, segs: list[Segment], offset: int) -> Prefilled:
        """Run the thinker (and mirror into the talker) on `segs` as one chunk at `offset`."""
        ids, kwargs, grid, seqlens = pack(segs, self.device, self.dtype)
        pos = rope_positions(self.thinker, ids, grid, seqlens) + offset
        logits, hidden = thinker_pass(self.thinker, ids, pos.to(self.device), self.cache,
                                      **kwargs)
        talker_inputs = torch.empty(0)
        if self.talker is not None:
            talker_inputs = self.talker_inputs(ids, hidden)
            self.talker(
                inputs_embeds=talker_inputs.to(self.talker.dtype),
                position_ids=pos.to(self.device),
                cache=self.talker_cache,
                use_cache=True,
            )
        return Prefilled(logits, talker_inputs, pos)

    def talker_inputs(self, ids: torch.Tensor, last_hidden: torch.Tensor) -> torch.Tensor:
        """Embedding (zeroed on audio/image placeholders) + last hidden state per token,
        as Qwen2_5OmniForConditionalGeneration.generate builds the talker's prompt (its
        first hidden state is the embedding; its last, the thinker's final one)."""
        embeds = self.thinker.get_input_embeddings()(ids)
        mm = torch.isin(ids, self._mm_ids.to(ids.device)).unsqueeze(-1)
        embeds = embeds.masked_fill(mm, 0.0)
        return embeds + last_hidden

    def append(self, seg: Segment) -> torch.Tensor:
        """Prefill `seg` at the end of the conversation; returns next-token logits."""
        return self.extend([seg])

    def extend(self, segs: list[Segment], chunk_tokens: int = PREFILL_CHUNK_TOKENS
               ) -> torch.Tensor:
        """Prefill `segs` at the end of the conversation, several segments to a forward
        pass (up to `chunk_tokens` tokens); returns the last next-token logits.

        Context after a trim, or units held during an answer, go in a few large passes
        instead of one per segment: the same result (whole segments, explicit positions),
        but re-prefilling a trimmed 18k-token context is one pass per chunk, not ~200
        passes that each run the audio and vision encoders on one unit.
        """
        if not segs:
            raise ValueError("nothing to prefill")
        self._drop_uncommitted()
        for chunk in _chunks(segs, chunk_tokens):
            res = self.forward_chunk(chunk, self.next_pos)
            start = 0
            for seg in chunk:
                seg_pos = res.positions[:, :, start : start + seg.length]
                start += seg.length
                end_pos = int(seg_pos.max()) + 1
                self.entries.append(_Entry(seg, self.length + seg.length, end_pos))
            self.last_logits = res.logits
        self._release_settled_media()
        return self.last_logits

    def _release_settled_media(self) -> None:
        """Let go of the audio features and frames of turns that can never be prefilled
        again. Where trimming shifts the caches (the usual case), a segment is prefilled
        again only by a rollback inside the last turns (a retracted or corrected answer);
        older ones live on as keys and values alone. Holding their inputs made the
        process grow with the context (about 50 KB per second of audio plus a frame's
        JPEG, some 60 MB by the time a 32k-token context is full) and drop only when it
        was trimmed. Without shifting, a trim prefills kept segments again: keep them.
        """
        if self._shifts is None or not self.entries:
            return
        settled = self.entries[-1].segment.turn - SETTLED_AFTER_TURNS
        for entry in self.entries:
            seg = entry.segment
            if seg.turn >= settled:
                break
            if seg.audio is not None or seg.image is not None:
                entry.segment = dataclasses.replace(
                    seg, audio=None, image=None, extra={**seg.extra, MEDIA_RELEASED: True})

    def _drop_uncommitted(self) -> None:
        """An answer may have left tokens past the last segment: they are not part of the
        conversation until committed (backend.heard / answer end), so drop them."""
        if self.length != self.cache.get_seq_length():
            self.rollback_to(len(self.entries))

    def rollback_to(self, n_entries: int) -> None:
        """Keep the first `n_entries` segments; drop everything after them from both caches."""
        self.entries = self.entries[:n_entries]
        truncate_cache(self.cache, self.length)
        if self.talker_cache is not None:
            truncate_cache(self.talker_cache, self.length)
        self.last_logits = None

    # --- trimming --------------------------------------------------------------------

    def over_budget(self, extra: int = 0) -> bool:
        return self.length + extra > self.token_budget

    def trim(self, extra: int = 0) -> int:
        """Drop the oldest user/assistant segments until there is room for `extra` more
        tokens with slack, keeping the system prompt and the open turn's opener. Returns
        the number of segments dropped.

        What is kept ends up at the positions a fresh prefill would give it. The caches
        are shifted in place: kept tokens move down over the dropped ones and their keys
        are rotated back by the positions they moved (rotary embeddings compose, so that
        is exact), which costs milliseconds where prefilling an 18k-token context again
        stalls the conversation for seconds. Kept tokens still carry what they attended
        to when they were first heard (as llama.cpp's context shift and StreamingLLM do);
        the system prompt stays first, where attention anchors. Where the rotation is
        unknown (a rope whose frequencies change with length), or `shift_on_trim` is off,
        the kept segments are prefilled again instead.
        """
        if not self.over_budget(extra) or len(self.entries) < 2:
            return 0
        self._drop_uncommitted()
        target = int(self.token_budget * self.trim_to) - extra
        keep_head = 1 if self.entries[0].segment.kind is Kind.SYSTEM else 0
        tail = list(self.entries[keep_head:])
        head_len = self.entries[keep_head - 1].end_len if keep_head else 0
        total = head_len + sum(e.segment.length for e in tail)
        dropped = 0
        # Whole turns first: never leave half a past turn behind.
        while tail and total > target:
            turn = tail[0].segment.turn
            if (all(e.segment.turn == turn for e in tail)
                    and tail[-1].segment.kind is not Kind.ASSISTANT):
                break  # only the open turn is left: it is trimmed unit by unit below
            while tail and tail[0].segment.turn == turn:
                total -= tail.pop(0).segment.length
                dropped += 1
        # Then the open turn's oldest units, keeping its opener so the layout stays valid.
        i = 1 if tail and tail[0].segment.kind is Kind.USER_OPEN else 0
        while total > target and i < len(tail) and tail[i].segment.kind is Kind.UNIT:
            total -= tail.pop(i).segment.length
            dropped += 1
        if dropped:
            kept = self.entries[:keep_head] + tail
            if self._shifts is not None:
                self._shift_down(kept)
            else:
                self.rollback_to(keep_head)
                if tail:
                    self.extend([e.segment for e in tail])
            self.trims += 1
        return dropped

    def _shift_down(self, kept: list[_Entry]) -> None:
        """Keep only `kept` (entries in order), moving them down in both caches."""
        kept_ids = {id(e) for e in kept}
        moves: list[Move] = []
        entries: list[_Entry] = []
        old_len = old_pos = new_len = new_pos = 0
        for entry in self.entries:
            if id(entry) in kept_ids:
                count = entry.end_len - old_len
                shift = old_pos - new_pos
                last = moves[-1] if moves else None
                if last and last.shift == shift and last.src + last.count == old_len:
                    moves[-1] = Move(last.src, last.dst, last.count + count, shift)
                else:
                    moves.append(Move(old_len, new_len, count, shift))
                new_len += count
                new_pos = entry.end_pos - shift
                entries.append(_Entry(entry.segment, new_len, new_pos))
            old_len, old_pos = entry.end_len, entry.end_pos
        moves = [m for m in moves if m.src != m.dst or m.shift]
        for cache, shift in self._shifts:
            for layer in cache.layers:
                layer.compact(moves, new_len, shift)
        self.entries = entries
        self.last_logits = None


class RotaryShift:
    """Rotates cached keys `shift` positions down, with a decoder's own rotary module.

    Keys are cached after rotary embedding, so a key at position p holds R(p)·k; moving
    it to p − s is R(−s)·R(p)·k. Qwen2.5-Omni's multimodal rope gives each frequency one
    of the three position components (time, height, width); a shift moves all three by
    the same s, so every frequency turns by −s·θ, whichever component it follows.
    """

    def __init__(self, rotary: torch.nn.Module) -> None:
        self.rotary = rotary

    @classmethod
    def of(cls, decoder: torch.nn.Module) -> RotaryShift | None:
        """The shift for `decoder`'s text rotary embedding, or None when there is none
        this can rotate by (a rope whose frequencies change with the length)."""
        for name, module in decoder.named_modules():
            if (name.endswith("rotary_emb") and hasattr(module, "inv_freq")
                    and not any(part in name for part in ("visual", "audio", "token2wav"))):
                if getattr(module, "rope_type", "default") == "dynamic":
                    return None
                return cls(module)
        return None

    @torch.no_grad()
    def __call__(self, keys: torch.Tensor, shift: int) -> torch.Tensor:
        k = keys.float()
        positions = torch.full((3, 1, 1), -shift, device=keys.device)
        cos, sin = self.rotary(k, positions)  # (1, 1, head_dim), scaled
        scale = float(getattr(self.rotary, "attention_scaling", 1.0) or 1.0)
        cos, sin = cos[:, None] / scale, sin[:, None] / scale  # a pure rotation
        return (k * cos + rotate_half(k) * sin).to(keys.dtype)


def _chunks(segs: list[Segment], max_tokens: int) -> list[list[Segment]]:
    """Consecutive runs of whole segments of at most `max_tokens` (a longer segment
    alone)."""
    chunks: list[list[Segment]] = []
    size = 0
    for seg in segs:
        if chunks and size + seg.length <= max_tokens:
            chunks[-1].append(seg)
            size += seg.length
        else:
            chunks.append([seg])
            size = seg.length
    return chunks


def pack(segs: list[Segment], device=None, dtype=None
         ) -> tuple[torch.Tensor, dict, torch.Tensor | None, torch.Tensor | None]:
    """The thinker's inputs for `segs` as one chunk: (ids, multimodal kwargs, image grid,
    audio lengths). Audio features of different lengths are padded and masked, one row
    per segment with audio, as the processor batches them; images are concatenated."""
    released = [s for s in segs if s.extra.get(MEDIA_RELEASED)]
    if released:
        raise RuntimeError(
            f"turn {released[0].turn}'s audio and frame were let go once it settled "
            "(WarmContext._release_settled_media) and cannot be prefilled again")
    ids = torch.cat([s.ids for s in segs], dim=1)
    audios = [s.audio for s in segs if s.audio is not None]
    images = [s.image for s in segs if s.image is not None]
    kwargs: dict = {}
    seqlens = grid = None
    if audios:
        frames = max(a.features.shape[-1] for a in audios)
        feats = audios[0].features.new_zeros(len(audios), audios[0].features.shape[1], frames)
        mask = torch.zeros(len(audios), frames, dtype=torch.long)
        for i, a in enumerate(audios):
            n = a.features.shape[-1]
            feats[i, :, :n] = a.features[0]
            mask[i, :n] = a.mask[0]
        kwargs["input_features"] = feats.to(device, dtype)
        kwargs["feature_attention_mask"] = mask.to(device)
        seqlens = mask.sum(-1)
    if images:
        grid = torch.cat([im.grid_thw for im in images])
        kwargs["pixel_values"] = torch.cat([im.pixel_values for im in images]).to(device, dtype)
        kwargs["image_grid_thw"] = grid.to(device)
    return ids.to(device), kwargs, grid, seqlens


def rope_positions(thinker, ids: torch.Tensor, grid: torch.Tensor | None,
                   seqlens: torch.Tensor | None) -> torch.Tensor:
    """Multimodal rotary positions (3, 1, n) of one chunk, counted from 0 (on the CPU)."""
    ids = ids.cpu()
    # The text-only branch of get_rope_index needs a mask; all ones, no padding.
    pos, _ = thinker.get_rope_index(ids, grid, None, torch.ones_like(ids), False, seqlens, None)
    return pos


@torch.no_grad()
def one_shot_logits(thinker, segments: list[Segment]) -> torch.Tensor:
    """Next-token logits of the whole conversation prefilled in one forward pass.

    The reference that chunked prefill and trimming are checked against; also useful
    for debugging a real checkpoint.
    """
    device = next(thinker.parameters()).device
    dtype = thinker.get_input_embeddings().weight.dtype
    ids, kwargs, grid, seqlens = pack(segments, device, dtype)
    pos = rope_positions(thinker, ids, grid, seqlens)
    out = thinker(input_ids=ids, position_ids=pos.to(device), use_cache=False, **kwargs)
    return out.logits[0, -1].float()
