"""The conversation's token layout (Qwen2.5-Omni's ChatML with audio/vision blocks).

A conversation is a list of segments, each prefilled into the thinker as one chunk:

    system     <|im_start|>system\\n{prompt}<|im_end|>\\n
    user_open  <|im_start|>user\\n
    unit       <|vision_bos|><|IMAGE|>…<|vision_eos|><|audio_bos|><|AUDIO|>…<|audio_eos|>
    user_close <|im_end|>\\n<|im_start|>assistant\\n
    assistant  {answer text}<|im_end|>\\n

Each chunk holds whole vision/audio blocks, which is what makes chunked prefill equal
to one full prefill (checked on the tiny model). Ids come from the tokenizer, never
from constants, so the tiny model's remapped vocabulary and the real one both work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from app.model.contract import BackendError
from app.model.qwen_omni.features import AudioInput, ImageInput

# Qwen2.5-Omni speaks only with this system prompt (its model card: "the system prompt
# must be exactly this for audio output"); a persona's role is appended after it.
QWEN_SPEECH_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech."
)


def system_text(role_prompt: str) -> str:
    role = (role_prompt or "").strip()
    return QWEN_SPEECH_SYSTEM_PROMPT if not role else f"{QWEN_SPEECH_SYSTEM_PROMPT} {role}"


class Kind(enum.StrEnum):
    SYSTEM = "system"
    USER_OPEN = "user_open"
    UNIT = "unit"
    USER_CLOSE = "user_close"
    ASSISTANT = "assistant"


@dataclass
class Segment:
    """One chunk of the conversation, with what the thinker needs to prefill it again."""

    kind: Kind
    turn: int
    ids: torch.Tensor  # (1, n) long
    audio: AudioInput | None = None
    image: ImageInput | None = None
    text: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])


_REQUIRED = (
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|IMAGE|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
)


class Layout:
    """Builds segments' token ids with one tokenizer."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        ids = {}
        unk = getattr(tokenizer, "unk_token_id", None)
        for name in _REQUIRED:
            tid = tokenizer.convert_tokens_to_ids(name)
            if tid is None or tid == unk:
                raise BackendError(
                    f"the tokenizer has no {name} token",
                    hint="use the tokenizer that ships with the Qwen2.5-Omni checkpoint",
                )
            ids[name] = int(tid)
        self.im_start = ids["<|im_start|>"]
        self.im_end = ids["<|im_end|>"]
        self.audio = ids["<|AUDIO|>"]
        self.audio_bos = ids["<|audio_bos|>"]
        self.audio_eos = ids["<|audio_eos|>"]
        self.image = ids["<|IMAGE|>"]
        self.vision_bos = ids["<|vision_bos|>"]
        self.vision_eos = ids["<|vision_eos|>"]
        eos = {self.im_end}
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.stop_ids = frozenset(eos)

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    @staticmethod
    def _t(ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], dtype=torch.long)

    def system(self, role_prompt: str) -> Segment:
        text = system_text(role_prompt)
        ids = [self.im_start, *self.encode(f"system\n{text}"), self.im_end, *self.encode("\n")]
        return Segment(Kind.SYSTEM, 0, self._t(ids), text=text)

    def user_open(self, turn: int) -> Segment:
        return Segment(Kind.USER_OPEN, turn, self._t([self.im_start, *self.encode("user\n")]))

    def unit(self, turn: int, audio: AudioInput, image: ImageInput | None) -> Segment:
        ids: list[int] = []
        if image is not None:
            ids += [self.vision_bos, *([self.image] * image.n_tokens), self.vision_eos]
        ids += [self.audio_bos, *([self.audio] * audio.n_tokens), self.audio_eos]
        return Segment(Kind.UNIT, turn, self._t(ids), audio=audio, image=image)

    def user_close(self, turn: int) -> Segment:
        ids = [self.im_end, *self.encode("\n"), self.im_start, *self.encode("assistant\n")]
        return Segment(Kind.USER_CLOSE, turn, self._t(ids))

    def assistant(self, turn: int, answer_ids: list[int], text: str) -> Segment:
        ids = [*answer_ids, self.im_end, *self.encode("\n")]
        return Segment(Kind.ASSISTANT, turn, self._t(ids), text=text)
