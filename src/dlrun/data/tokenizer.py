"""Word/punctuation tokenizer and its inverse, for sentence-per-line text.

Named ``tokenizer`` rather than ``tokenize`` so that running a file from this folder can never
shadow the standard library's ``tokenize`` (which ``inspect`` and ``linecache`` import).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
