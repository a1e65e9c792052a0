"""The text side of Moshi: its SentencePiece vocabulary, and what its ids mean.

Kyutai's checkpoints (and PersonaPlex) ship the text tokenizer as a SentencePiece model
file (`tokenizer_spm_32k_3.model`); transformers-format folders ship `tokenizer.json`.
Both are read here without the `sentencepiece` package: a .model file is a protobuf,
parsed with the protobuf module transformers bundles, and turned into a `tokenizers`
Unigram tokenizer that follows the model's own normalizer settings.

Ids with a meaning of their own (Kyutai's LM, `existing_text_padding_id` and
`existing_text_end_padding_id`): PAD (3) fills every frame in which the model says no
new word; EPAD (0) marks the last PAD before a word. Neither is text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.model.contract import BackendError

TEXT_PAD_ID = 3
TEXT_EPAD_ID = 0
SPM_NAMES = ("tokenizer_spm_32k_3.model",)
WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁", a space before a word
CONTROL_PIECES = frozenset({"<unk>", "<s>", "</s>", "<pad>"})


def spm_tokenizer(path: Path):  # -> tokenizers.Tokenizer
    """A `tokenizers` Unigram tokenizer from a SentencePiece .model file."""
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto_module = import_protobuf()
    proto = proto_module.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises its own DecodeError
        raise BackendError(
            f"{path} is not a SentencePiece model ({type(exc).__name__}: {exc})",
            hint="the file is damaged: download or copy the checkpoint again",
        ) from exc
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    if not vocab:
        raise BackendError(f"{path} holds no vocabulary", hint="download the tokenizer again")
    return SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)


def find_tokenizer_file(folder: Path) -> Path | None:
    """tokenizer.json first (transformers' format), else a SentencePiece .model file."""
    if (folder / "tokenizer.json").is_file():
        return folder / "tokenizer.json"
    for name in SPM_NAMES:
        if (folder / name).is_file():
            return folder / name
    models = sorted(folder.glob("*.model"))
    return models[0] if models else None


@dataclass
class TextVocab:
    """Encode role prompts; turn the model's text ids back into subtitle text."""

    tokenizer: object  # tokenizers.Tokenizer
    pad_id: int = TEXT_PAD_ID
    epad_id: int = TEXT_EPAD_ID

    @classmethod
    def from_folder(cls, folder: Path, pad_id: int = TEXT_PAD_ID,
                    epad_id: int = TEXT_EPAD_ID) -> TextVocab:
        path = find_tokenizer_file(folder)
        if path is None:
            raise BackendError(
                f"{folder} has no text tokenizer (tokenizer.json or a SentencePiece .model)",
                hint="copy the whole checkpoint folder, tokenizer included",
            )
        if path.suffix == ".json":
            from tokenizers import Tokenizer

            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as exc:  # tokenizers raises a plain Exception subclass
                raise BackendError(f"{path} cannot be read ({exc})",
                                   hint="download or copy the checkpoint again") from exc
        else:
            tok = spm_tokenizer(path)
        return cls(tok, pad_id, epad_id)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def is_word(self, token_id: int) -> bool:
        """Whether `token_id` carries text (not PAD, EPAD or a control piece)."""
        if token_id in (self.pad_id, self.epad_id):
            return False
        piece = self.tokenizer.id_to_token(int(token_id))
        return bool(piece) and piece not in CONTROL_PIECES

    def piece_text(self, token_id: int) -> str:
        """The subtitle text of one id: "" for PAD/EPAD/control ids, "▁" as a space."""
        if not self.is_word(token_id):
            return ""
        piece = self.tokenizer.id_to_token(int(token_id)) or ""
        return piece.replace(WORD_BOUNDARY, " ")


def system_prompt(role: str) -> str:
    """PersonaPlex's framing of a role prompt: "<system> {role} <system>" (its
    `wrap_with_system_tags`), left as is when the text is already framed."""
    cleaned = role.strip()
    if cleaned.startswith("<system>") and cleaned.endswith("<system>"):
        return cleaned
    return f"<system> {cleaned} <system>"
