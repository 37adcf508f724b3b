"""Subword tokenizers (BPE, unigram): a sentencepiece model trained on a training split, text <-> pieces.

Pieces carry the space before them (``▁a ▁man ▁in ▁blue .``), so ``detokenize(tokenize(s)) == s`` for
every line whose characters the training split holds (lowercased when ``lowercase``); others come back
with ``<unk>`` in their place. The model's ids are the vocabulary's: ``<pad> <unk> <bos> <eos>`` at 0-3,
then the pieces, ``vocab_size`` in all. The trained model is plain bytes, kept in checkpoints.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dlrun.data.vocab import BOS, BOS_INDEX, EOS, EOS_INDEX, PAD, PAD_INDEX, SPECIALS, UNK, UNK_INDEX, Vocabulary

SUBWORD_KINDS = ("bpe", "unigram")


class VocabSizeError(ValueError):
    """``vocab_size`` does not fit the training split (too small for its characters, too large for its text)."""


class SubwordTokenizer:
    """Pieces of a sentencepiece ``kind`` (``bpe`` or ``unigram``) model; lowercased first when ``lowercase``."""

    def __init__(self, model_proto: bytes, kind: str, lowercase: bool = True) -> None:
        import sentencepiece as spm

        self.kind = kind
        self.lowercase = lowercase
        self.model_proto = bytes(model_proto)
        self._model = spm.SentencePieceProcessor(model_proto=self.model_proto)

    @classmethod
    def train(cls, lines: Sequence[str], kind: str, vocab_size: int, lowercase: bool = True) -> SubwordTokenizer:
        """A ``kind`` model of exactly ``vocab_size`` ids (the 4 specials included) trained on ``lines`` alone.

        Raises ``VocabSizeError`` when the lines cannot give that many ids.
        """
        import sentencepiece as spm

        if kind not in SUBWORD_KINDS:
            raise ValueError(f"tokenizer: must be one of {', '.join(SUBWORD_KINDS)}, got {kind!r}")
        text = [line.lower() if lowercase else line for line in lines]
        text = [line for line in text if line.strip()]
        if not text:
            raise VocabSizeError("no text to train a subword model on")
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(text),
                model_writer=model,
                model_type=kind,
                vocab_size=vocab_size,
                # Our specials at our ids, so the model's ids are the vocabulary's.
                pad_id=PAD_INDEX,
                unk_id=UNK_INDEX,
                bos_id=BOS_INDEX,
                eos_id=EOS_INDEX,
                pad_piece=PAD,
                unk_piece=UNK,
                bos_piece=BOS,
                eos_piece=EOS,
                unk_surface=UNK,
                # Lossless: no Unicode normalization, spaces kept as written, every training character kept.
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                character_coverage=1.0,
                num_threads=1,  # the same lines give the same model (resume retrains it before restoring)
                minloglevel=2,
            )
        except RuntimeError as err:
            raise VocabSizeError(_size_fault(str(err), vocab_size)) from None
        return cls(model.getvalue(), kind, lowercase)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SubwordTokenizer:
        """Rebuild from ``state()`` (e.g. a checkpoint's data module state)."""
        return cls(state["model"], state["kind"], bool(state["lowercase"]))

    def state(self) -> dict[str, Any]:
        """Plain data: kind, lowercase and the serialized model (bytes, safe for ``weights_only`` loading)."""
        return {"kind": self.kind, "lowercase": self.lowercase, "model": self.model_proto}

    def save(self, path: str | Path) -> Path:
        """Write the sentencepiece model file (``sentencepiece.SentencePieceProcessor(model_file=path)`` reads it)."""
        path = Path(path)
        path.write_bytes(self.model_proto)
        return path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubwordTokenizer) and self.state() == other.state()

    def __repr__(self) -> str:
        return f"SubwordTokenizer({self.kind}, {self._model.get_piece_size()} pieces)"

    def tokenize(self, line: str) -> list[str]:
        """The pieces of one line."""
        return self._model.encode(line.lower() if self.lowercase else line, out_type=str)

    def tokenize_all(self, lines: Sequence[str]) -> list[list[str]]:
        """The pieces of every line, in order."""
        if not lines:
            return []
        return self._model.encode([line.lower() if self.lowercase else line for line in lines], out_type=str)

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Plain text of pieces: ``▁a ▁man ,`` -> ``a man,``."""
        return self._model.decode_pieces(list(tokens))

    def build_vocabulary(self, sentences: Iterable[Sequence[str]], min_freq: int, max_size: int | None) -> Vocabulary:
        """Every piece of the model, in its id order (the size was fixed by training; the arguments do not apply)."""
        model = self._model
        vocab = Vocabulary(model.id_to_piece(i) for i in range(model.get_piece_size()))
        assert tuple(vocab.itos[: len(SPECIALS)]) == SPECIALS
        return vocab


def _size_fault(message: str, vocab_size: int) -> str:
    """sentencepiece's words for a size that does not fit -> what to set instead."""
    # "Vocabulary size is smaller than required_chars. 20 vs 48. Increase vocab_size or ..."
    small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if small:
        return f"{vocab_size} cannot hold the training split's characters and the 4 specials (at least {small[1]})"
    # "Vocabulary size too high (8000). Please set it to a value <= 7103."
    high = re.search(r"too high \(\d+\)\. Please set it to a value <= (\d+)", message)
    if high:
        return f"{vocab_size} is more pieces than the training split gives (at most {high[1]})"
    return " ".join(message.split())[:240]
