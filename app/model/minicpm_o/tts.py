"""The speech decoder (`tts`): the LLM's words of one unit -> 25 speech codes (1 s).

How the official duplex loop (OpenBMB's `MiniCPMODuplex.streaming_generate` with
`MiniCPMTTS.generate_chunk`) drives it, and so how we do:

* The condition of a unit is one position per word the LLM generated after the unit's
  first step (`UnitResult.text_ids`, the same tokens the official code keeps), each
  `emb_text(token) + l2norm(projector_semantic(h))` with `h` the LLM's last hidden state
  (after its final norm) at that token, and one more position, `emb_text(audio_bos)`.
* `generate_chunk`: the condition is fed at once, then one code a step, each fed back
  through `emb_code[0]`; at most 26 steps, the 26th code is only drawn (its decision
  never reaches the output), so a unit gives 25 codes (1 s at 25 codes a second). The
  end code (`num_audio_tokens - 1`, 6561) is forbidden for the first 26 steps, except in
  the first unit of a turn and the unit that ends it (then it may stop early, and the
  codes before it are the unit's). Sampling: logits / temperature 0.8, the repetition
  penalty 1.05 (per occurrence, sign-aware) over the last 16 codes of this unit, then a
  draw from the softmax; no top-k or top-p (the official code builds them and does not
  use them). Greedy mode takes the argmax instead (tests, parity).
* The decoder's KV cache carries across the units of a turn (positions continue), and
  is dropped when the turn ends (`<|turn_eos|>`) or is cut (barge-in).

Where we depart from the official loop, on purpose (both are bugs there, not choices):
a unit whose last token is `<|listen|>` gets no speech in the official code, even when
`<|turn_eos|>` came just before it in the same unit: the turn's last words are never
spoken and the cache is never reset. We speak them and end the turn. And a unit that
was not speaking but ended with the model's own `<|chunk_eos|>` at its first step makes
25 codes from the bare audio-BOS condition there (sound with no words); here it is silent.

The API for the backend (one `SpeechStream` per conversation, on the model's device):

    stream = SpeechStream(model.tts, sampling=SpeechSampling())
    result = decoder.step(...)                 # a duplex UnitResult
    speech = stream.feed(result)               # SpeechCodes
    token2wav.push(speech.codes)               # 25 codes a speaking unit, or fewer
    if speech.turn_ended: flush token2wav (or, if speech.interrupted, drop its buffer)
    stream.end_turn()                          # barge-in from outside / a new conversation

`feed` ends the turn by itself on `<|turn_eos|>` and on a forced listen that closed the
turn or a stop mid-unit (`interrupted`: drop, do not flush).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from app.model.minicpm_o.config import TTSConfig
from app.model.minicpm_o.projector import MLPProjector

CODES_PER_UNIT = 25  # 25 codes a second, 1 s units


def _projector(config: TTSConfig) -> nn.Module:
    if config.projector_type == "mlp":
        return MLPProjector(config.llm_dim, config.hidden_size)
    if config.projector_type == "default":
        return nn.Linear(config.llm_dim, config.hidden_size, bias=False)
    raise ValueError(f"unsupported tts projector_type {config.projector_type!r}")


@dataclass(frozen=True)
class SpeechSampling:
    """The official duplex TTS settings (MiniCPMODuplex's tts_* defaults)."""

    greedy: bool = False
    temperature: float = 0.8
    repetition_penalty: float = 1.05
    repetition_window: int = 16
    codes_per_unit: int = CODES_PER_UNIT
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0 and not self.greedy:
            raise ValueError("tts temperature must be positive (or use greedy)")
        if self.repetition_penalty <= 0:
            raise ValueError("tts repetition_penalty must be positive")
        if self.codes_per_unit < 1 or self.repetition_window < 1:
            raise ValueError("codes_per_unit and repetition_window must be at least 1")


@dataclass(frozen=True)
class SpeechCodes:
    """What one unit gives the vocoder.

    `codes`: speech codes (0..6560), 25 for a speaking unit mid-turn, possibly fewer in
    a turn's first or last unit, none when listening. `turn_started`: these are a turn's
    first codes (the official loop then lets the vocoder start on fewer than a full
    window: `force_flush` in its `_generate_waveform_from_tokens`). `turn_ended`: the
    turn is over after these codes; flush the vocoder's buffer, unless `interrupted` (a
    barge-in or a stop cut it): then drop what it holds.
    """

    codes: tuple[int, ...] = ()
    turn_ended: bool = False
    interrupted: bool = False
    turn_started: bool = False


class SpeechDecoder(nn.Module):
    """The official MiniCPMTTS's module tree (names as the checkpoint's) and its forward."""

    def __init__(self, config: TTSConfig) -> None:
        from transformers import LlamaConfig, LlamaModel

        super().__init__()
        if config.backbone_model != "llama":
            raise ValueError(f"unsupported tts backbone {config.backbone_model!r}")
        self.config = config
        # The official tree builds LlamaConfig from these keys only, so the backbone's
        # own token table has LlamaConfig's default vocabulary (unused: inputs are
        # embeddings).
        backbone = LlamaConfig(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_attention_heads=config.num_attention_heads,
            num_hidden_layers=config.num_hidden_layers,
            num_key_value_heads=config.num_key_value_heads,
            max_position_embeddings=config.max_position_embeddings,
        )
        self.emb_text = nn.Embedding(config.num_text_tokens, config.hidden_size)
        self.model = LlamaModel(backbone)
        self.projector_spk = _projector(config)
        self.projector_semantic = _projector(config)
        self.emb_code = nn.ModuleList(
            nn.Embedding(config.num_audio_tokens, config.hidden_size)
            for _ in range(config.num_vq))
        self.head_code = nn.ModuleList(
            weight_norm(nn.Linear(config.hidden_size, config.num_audio_tokens, bias=False),
                        name="weight")
            for _ in range(config.num_vq))

    @property
    def eos_code(self) -> int:
        """The end-of-speech code: the last entry of the code vocabulary (6561)."""
        return int(self.config.num_audio_tokens) - 1

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def condition(self, token_ids: Sequence[int], hidden: torch.Tensor | None) -> torch.Tensor:
        """[1, len(token_ids) + 1, hidden_size]: per word emb_text(token) +
        l2norm(projector_semantic(h)), then emb_text(audio_bos) (module docstring).
        `hidden`: [len(token_ids), llm_dim], the LLM's last hidden states at the words."""
        table = self.emb_text.weight
        bos = self.emb_text(torch.tensor([self.config.audio_bos_token_id], device=table.device))
        if not token_ids:
            return bos.unsqueeze(0)
        if hidden is None or hidden.shape[0] != len(token_ids):
            got = None if hidden is None else tuple(hidden.shape)
            raise ValueError(f"the TTS needs one LLM hidden state per word: {len(token_ids)} "
                             f"words, hidden states {got}")
        words = self.emb_text(torch.tensor(list(token_ids), dtype=torch.long,
                                           device=table.device))
        proj = self.projector_semantic.linear1.weight if isinstance(
            self.projector_semantic, MLPProjector) else self.projector_semantic.weight
        semantic = self.projector_semantic(hidden.to(device=proj.device, dtype=proj.dtype))
        semantic = F.normalize(semantic, p=2, dim=-1)
        return torch.cat([words + semantic.to(words.dtype), bos], dim=0).unsqueeze(0)

    @torch.no_grad()
    def generate_chunk(self, condition: torch.Tensor, cache, *, min_steps: int, max_steps: int,
                       sampling: SpeechSampling,
                       generator: torch.Generator | None = None) -> tuple[list[int], object]:
        """One unit's codes from `condition` ([1, L, hidden]) on top of `cache` (a
        DynamicCache holding the turn so far, whose length is the next position).

        At most `max_steps` steps; the end code is forbidden while step < `min_steps`.
        Returns the codes before the end code, or all but the last drawn when no end
        came (the official rule: the last step's code is drawn and dropped), and the
        cache, which then holds the condition and exactly the returned codes."""
        if len(self.emb_code) != 1:
            raise ValueError(f"the speech decoder generates one codebook; this one has "
                             f"{len(self.emb_code)}")
        eos = self.eos_code
        device = condition.device
        temperature = torch.tensor(sampling.temperature, dtype=torch.float32, device=device)
        codes: list[int] = []
        inputs = condition
        past = int(cache.get_seq_length())
        # The weight-normalised head recomputes its weight on every call unless cached.
        with parametrize.cached():
            for t in range(max_steps):
                n = int(inputs.shape[1])
                positions = torch.arange(past, past + n, device=device).unsqueeze(0)
                out = self.model(inputs_embeds=inputs, position_ids=positions, cache=cache,
                                 use_cache=True)
                cache = out.cache
                past += n
                logits = self.head_code[0](out.last_hidden_state[:, -1]).float()  # [1, V]
                logits = logits / temperature
                if t > 0 and sampling.repetition_penalty != 1.0:
                    logits = _penalise(logits, codes[-sampling.repetition_window:],
                                       sampling.repetition_penalty)
                if t < min_steps:
                    logits[:, eos] = float("-inf")
                if sampling.greedy:
                    code = int(torch.argmax(logits, dim=-1))
                else:
                    probs = F.softmax(logits, dim=-1)
                    code = int(torch.multinomial(probs, 1, generator=generator))
                if code == eos or t == max_steps - 1:
                    break
                codes.append(code)
                inputs = self.emb_code[0](torch.tensor([[code]], device=device))
        return codes, cache


def _penalise(logits: torch.Tensor, recent: Sequence[int], penalty: float) -> torch.Tensor:
    """The official code penalty: each occurrence in `recent` divides a positive logit
    (multiplies a negative one) by `penalty` once more."""
    freq = torch.bincount(torch.tensor(list(recent), dtype=torch.long, device=logits.device),
                          minlength=logits.shape[-1]).unsqueeze(0)
    alpha = torch.pow(penalty, freq)
    return torch.where(logits < 0, logits * alpha, logits / alpha)


class SpeechStream:
    """One conversation's speech: the TTS state across the units of a turn (module
    docstring). Not thread-safe: feed it from the thread that steps the LLM."""

    def __init__(self, decoder: SpeechDecoder, *, sampling: SpeechSampling | None = None) -> None:
        self.decoder = decoder
        self.sampling = sampling or SpeechSampling()
        device = decoder.emb_text.weight.device
        self._rng = torch.Generator(device=device)
        self._rng.manual_seed(self.sampling.seed)
        self._cache = None  # None: no turn in progress (the next speaking unit starts one)

    @property
    def in_turn(self) -> bool:
        return self._cache is not None

    @property
    def cache_length(self) -> int:
        return 0 if self._cache is None else int(self._cache.get_seq_length())

    def end_turn(self) -> None:
        """Drop the turn's cache: the next speaking unit starts a new turn."""
        self._cache = None

    def reset(self) -> None:
        """A new conversation: no turn, and the sampler's seed again."""
        self.end_turn()
        self._rng.manual_seed(self.sampling.seed)

    def feed(self, unit) -> SpeechCodes:
        """The codes of one duplex unit (a `duplex.UnitResult` with its `text_hidden`)."""
        if unit.stopped or unit.closed_turn:
            was = self.in_turn
            self.end_turn()
            return SpeechCodes(turn_ended=was or unit.closed_turn, interrupted=True)
        if not unit.speaking:
            return SpeechCodes()
        first = self._cache is None
        if first:
            self._cache = self.decoder.new_cache()
        # The turn is over when the unit leaves it closed: <|turn_eos|> was its last word
        # (words after a <|turn_eos|> reopen it, as in the official loop).
        ends = not unit.turn_open
        steps = self.sampling.codes_per_unit + 1
        # The official minimum: no early end mid-turn; a turn's first unit may be under
        # 1 s, and its last may stop where the words do.
        min_steps = 0 if first or ends else steps
        condition = self.decoder.condition(unit.text_ids, unit.text_hidden)
        codes, cache = self.decoder.generate_chunk(
            condition, self._cache, min_steps=min_steps, max_steps=steps,
            sampling=self.sampling, generator=self._rng)
        self._cache = cache
        if ends:
            self.end_turn()
        return SpeechCodes(codes=tuple(codes), turn_ended=ends, turn_started=first)
