"""One Moshi step per 80 ms frame: the token grid, the acoustic delays, the two transformers.

The streams
-----------
Moshi models 17 token streams: its text (inner monologue), its own 8 Mimi codebooks and
the user's 8. Stream k is delayed by `delays[k]` frames (Kyutai: 0 for text and each
semantic codebook, 1 for the 7 acoustic ones): the token of frame f of stream k sits at
grid position f + delays[k]. The step at position t reads the 17 tokens at t (any
stream with t <= delays[k] reads its initial token instead, as Kyutai's LMGen does),
runs the temporal transformer once, samples the text token and then, with the depth
transformer, the 8 audio tokens of position t + 1, one codebook after another.

So after step t, frame t - max(delays) + 1 of the model's streams is complete, and the
user's audio frame t has been heard (its semantic codebook at once, its acoustic ones
`delay` steps later). The model's own first frame is never output: it is the initial
tokens.

Forcing
-------
Any of the model's streams may be given instead of sampled (`Forced`): the persona
prefix gives all of them (voice prompt as the model's own audio, PAD text, then the
role text), and muting after a barge-in gives PAD text and silence codes. Given tokens
are written at their delayed positions like the user's, so a frame forced at one step
and a sampled frame at the next mix the way Kyutai's and PersonaPlex's loops do. The
depth transformer runs only for codebooks that are not given.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

NUM_CODEBOOKS = 8
STREAMS = 1 + 2 * NUM_CODEBOOKS


@dataclass(frozen=True)
class Sampling:
    """Kyutai's defaults (moshi.models.lm.LMGen): temperature and top-k per modality."""

    temp_text: float = 0.7
    top_k_text: int = 25
    temp_audio: float = 0.8
    top_k_audio: int = 250
    seed: int = 0


@dataclass(frozen=True)
class Forced:
    """The model's tokens for one frame, given instead of sampled (None: sample it)."""

    text: int | None = None
    audio: tuple[int, ...] | None = None  # NUM_CODEBOOKS codes


@dataclass
class FrameTokens:
    """One complete frame of the model's output, aligned across streams."""

    frame: int
    text: int
    codes: torch.Tensor  # (NUM_CODEBOOKS,) long


@dataclass
class Snapshot:
    """Everything a later conversation needs to continue from this point."""

    position: int
    grid: dict[int, list[int | None]]
    cache: object
    rng_state: torch.Tensor


def _copy_cache(cache, device) -> object:
    """A deep copy of a transformers cache whose tensors are compact copies on `device`."""
    memo: dict[int, object] = {}
    for layer in getattr(cache, "layers", ()):
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor):
                memo[id(value)] = value.to(device, copy=True)
    return copy.deepcopy(cache, memo)


@dataclass
class Stepper:
    """The state of one conversation with one loaded model (see the module docstring)."""

    model: torch.nn.Module  # MoshiForConditionalGeneration
    delays: tuple[int, ...]
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self) -> None:
        if len(self.delays) != STREAMS:
            raise ValueError(f"delays needs {STREAMS} entries, got {len(self.delays)}")
        if min(self.delays) < 0:
            raise ValueError("delays cannot be negative")
        config = self.model.config
        self.text_initial = int(config.vocab_size)  # the extra embedding row
        self.audio_initial = int(config.audio_vocab_size)
        self.max_delay = max(self.delays)
        param = next(self.model.decoder.parameters())
        self.device = param.device
        self.rng = torch.Generator(device="cpu").manual_seed(self.sampling.seed)
        self.inputs: list[list[int]] = []  # the 17 tokens each step read (tests, debugging)
        self.record_inputs = False
        self.reset()

    # --- state -----------------------------------------------------------------------

    def reset(self) -> None:
        from transformers import DynamicCache

        self.position = 0
        self.grid: dict[int, list[int | None]] = {}
        self.cache = DynamicCache(config=self.model.config)
        self.inputs = []
        # Each conversation samples from the seed again: the same persona and the same
        # user audio give the same conversation (and a restored snapshot continues it).
        self.rng.manual_seed(self.sampling.seed)

    def snapshot(self) -> Snapshot:
        """The state now; its cache is kept in system RAM (a persona prefix's cache is
        about 0.5 MB a frame on the 7B: the device's memory is for the conversation)."""
        return Snapshot(self.position, copy.deepcopy(self.grid), _copy_cache(self.cache, "cpu"),
                        self.rng.get_state())

    def restore(self, snap: Snapshot) -> None:
        self.position = snap.position
        self.grid = copy.deepcopy(snap.grid)
        self.cache = _copy_cache(snap.cache, self.device)
        self.rng.set_state(snap.rng_state)
        self.inputs = []

    def _slot(self, position: int) -> list[int | None]:
        return self.grid.setdefault(position, [None] * STREAMS)

    def _put(self, stream: int, frame: int, token: int) -> None:
        self._slot(frame + self.delays[stream])[stream] = int(token)

    # --- one step ----------------------------------------------------------------------

    @torch.no_grad()
    def step(self, user_codes: torch.Tensor, forced: Forced | None = None) -> FrameTokens | None:
        """Hear the user's frame `position` (8 codes) and produce the model's next tokens.

        Returns the model's frame completed by this step, or None while the delays are
        still filling (the first max(delays) steps).
        """
        t = self.position
        user = [int(c) for c in user_codes.reshape(-1).tolist()]
        if len(user) != NUM_CODEBOOKS:
            raise ValueError(f"expected {NUM_CODEBOOKS} user codes, got {len(user)}")
        for q, code in enumerate(user):
            self._put(1 + NUM_CODEBOOKS + q, t, code)
        if forced is not None:
            # The model's frame t, given: written at its delayed positions like the user's.
            if forced.text is not None:
                self._put(0, t, forced.text)
            if forced.audio is not None:
                for q, code in enumerate(forced.audio):
                    self._put(1 + q, t, code)
        tokens = self._read(t)
        if self.record_inputs:
            self.inputs.append(tokens)
        hidden, text_logits = self._temporal(tokens, t)
        nxt = self._slot(t + 1)
        if nxt[0] is None:
            nxt[0] = self._sample(text_logits, self.sampling.temp_text, self.sampling.top_k_text)
        missing = [q for q in range(NUM_CODEBOOKS) if nxt[1 + q] is None]
        if missing:
            self._depth(hidden, nxt, missing[-1])
        self.position = t + 1
        self._forget(t - self.max_delay - 1)
        frame = t + 1 - self.max_delay
        if frame < 1:
            return None
        return self._frame(frame)

    def _read(self, t: int) -> list[int]:
        slot = self.grid.get(t, [None] * STREAMS)
        tokens = []
        for k in range(STREAMS):
            initial = self.text_initial if k == 0 else self.audio_initial
            value = slot[k]
            if t <= self.delays[k] or value is None:
                # Kyutai's rule: a delayed stream reads its initial token until its delay
                # has passed. (None after that would be a bug in the caller's order.)
                if t > self.delays[k]:
                    raise RuntimeError(f"stream {k} has no token at position {t}")
                value = initial
            tokens.append(int(value))
        return tokens

    def _temporal(self, tokens: list[int], t: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        ids = torch.tensor(tokens, device=self.device).view(STREAMS, 1, 1)
        embeds = model.decoder.model.embed_tokens(ids[0])
        for k in range(2 * NUM_CODEBOOKS):
            embeds = embeds + model.embed_tokens[k](ids[1 + k])
        out = model.decoder(
            inputs_embeds=embeds,
            cache=self.cache,
            use_cache=True,
            position_ids=torch.tensor([[t]], device=self.device),
        )
        self.cache = out.cache
        return out.last_hidden_state, out.logits[:, -1]

    def _depth(self, hidden: torch.Tensor, slot: list[int | None], last: int) -> None:
        """Sample the model's codebooks 0..last of the next position, keeping given ones."""
        from transformers import DynamicCache

        depth = self.model.depth_decoder
        cache = DynamicCache(config=depth.config)
        prev = int(slot[0])
        for q in range(last + 1):
            ids = torch.tensor([[prev]], device=self.device)
            logits = depth(input_ids=ids, last_hidden_state=hidden, cache=cache,
                           use_cache=True).logits[:, -1]
            if slot[1 + q] is None:
                slot[1 + q] = self._sample(logits, self.sampling.temp_audio,
                                           self.sampling.top_k_audio)
            prev = int(slot[1 + q])

    def _sample(self, logits: torch.Tensor, temp: float, top_k: int) -> int:
        logits = logits.float().reshape(-1).cpu()
        if temp <= 0:
            return int(logits.argmax())
        k = min(top_k, logits.numel())
        values, indices = torch.topk(logits / temp, k)
        probs = torch.softmax(values, dim=-1)
        return int(indices[torch.multinomial(probs, 1, generator=self.rng)])

    def _frame(self, frame: int) -> FrameTokens:
        text = self.grid[frame + self.delays[0]][0]
        codes = [self.grid[frame + self.delays[1 + q]][1 + q] for q in range(NUM_CODEBOOKS)]
        return FrameTokens(frame, int(text), torch.tensor(codes, dtype=torch.long))

    def _forget(self, before: int) -> None:
        for position in [p for p in self.grid if p < before]:
            del self.grid[position]
