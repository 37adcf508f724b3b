"""Read sentence-aligned text files (plain or gzip, UTF-8), one sentence per line.

Tokenizer and vocabulary live in ``tokenizer.py`` and ``vocab.py``; they are re-exported here
so ``from dlrun.data.text import tokenize, detokenize, Vocabulary`` works too.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from dlrun.data.errors import DataError
from dlrun.data.tokenizer import detokenize, tokenize
from dlrun.data.vocab import Vocabulary

__all__ = ["read_lines", "read_parallel", "tokenize", "detokenize", "Vocabulary"]


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file (``.gz`` decompressed), without line endings."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                raw = stream.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a valid gzip file ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is not part of the first sentence
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        bad = raw[err.start : err.end].hex()
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{bad} at column {column})") from None
    # split("\n"), not splitlines(): splitlines also breaks at \x0b, \x1c, \u2028 ... inside a
    # sentence, which would silently shift every later line out of alignment with its translation.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str], int]:
    """Stripped sentence pairs of two aligned files, without pairs where either side is empty.

    Returns ``(sources, targets, dropped)`` with ``dropped`` the number of empty pairs removed.
    """
    sources, targets = read_lines(src_path), read_lines(tgt_path)
    if len(sources) != len(targets):
        raise DataError(
            f"{src_path} has {len(sources)} lines but {tgt_path} has {len(targets)}: files must be sentence-aligned"
        )
    kept_src, kept_tgt = [], []
    for src, tgt in zip(sources, targets, strict=True):
        src, tgt = src.strip(), tgt.strip()
        if src and tgt:
            kept_src.append(src)
            kept_tgt.append(tgt)
    return kept_src, kept_tgt, len(sources) - len(kept_src)
