"""Word/punctuation tokenizer and its inverse, for sentence-per-line text; the protocol every tokenizer follows.

Named ``tokenizer`` rather than ``tokenize`` so that running a file from this folder can never
shadow the standard library's ``tokenize`` (which ``inspect`` and ``linecache`` import).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from dlrun.data.vocab import Vocabulary

# Numbers keep their inner separators (3.5, 10:30); words keep inner hyphens and apostrophes
# (t-shirt, don't); every other non-space character is a token of its own.
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)+|\w+(?:[-'’]\w+)*|[^\w\s]")

_CLOSING = frozenset(".,!?;:%)]}…”»")
_OPENING = frozenset("([{¿¡$“„«")
_SYMMETRIC_QUOTES = frozenset("\"'")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Split ``text`` into words and single punctuation marks, lowercased if asked."""
    if lowercase:
        text = text.lower()
    return _TOKEN.findall(text)


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens with spaces, attaching punctuation and quotes: ``a man , in blue .`` -> ``a man, in blue.``."""
    parts: list[str] = []
    glue_next = True  # no space before the first token
    open_quotes: set[str] = set()
    for token in tokens:
        closing_quote = False
        if token in _SYMMETRIC_QUOTES:
            # " and ' look the same on both sides: alternate between opening and closing.
            closing_quote = token in open_quotes
            open_quotes ^= {token}
        glue_left = glue_next or token in _CLOSING or closing_quote
        parts.append(token if glue_left else " " + token)
        glue_next = token in _OPENING or (token in _SYMMETRIC_QUOTES and not closing_quote)
    return "".join(parts)


TOKENIZERS = ("word", "bpe", "unigram")  # data.tokenizer: words and punctuation, or subword pieces (subword.py)


class Tokenizer(Protocol):
    """What a text data module asks of a tokenizer: text <-> tokens, and a vocabulary of its training tokens."""

    kind: str

    def tokenize(self, line: str) -> list[str]:
        """The tokens of one line."""
        ...

    def tokenize_all(self, lines: Sequence[str]) -> list[list[str]]:
        """The tokens of every line, in order."""
        ...

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Plain text of tokens (``<unk>`` kept as such)."""
        ...

    def build_vocabulary(self, sentences: Iterable[Sequence[str]], min_freq: int, max_size: int | None) -> Vocabulary:
        """The vocabulary of a tokenized training split."""
        ...


class WordTokenizer:
    """Words and punctuation marks (``tokenize``/``detokenize`` above), lowercased if asked; nothing to train."""

    kind = "word"

    def __init__(self, lowercase: bool = True) -> None:
        self.lowercase = lowercase

    def tokenize(self, line: str) -> list[str]:
        """Words and single punctuation marks of ``line``."""
        return tokenize(line, self.lowercase)

    def tokenize_all(self, lines: Sequence[str]) -> list[list[str]]:
        """``tokenize`` of every line."""
        return [tokenize(line, self.lowercase) for line in lines]

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Words joined with natural punctuation spacing."""
        return detokenize(tokens)

    def build_vocabulary(self, sentences: Iterable[Sequence[str]], min_freq: int, max_size: int | None) -> Vocabulary:
        """Words seen ``min_freq`` times or more, the ``max_size`` most frequent."""
        return Vocabulary.build(sentences, min_freq, max_size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self.lowercase == other.lowercase
