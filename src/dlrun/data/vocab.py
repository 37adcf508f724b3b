"""Token <-> id vocabulary with fixed special tokens at the front."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_INDEX, UNK_INDEX, BOS_INDEX, EOS_INDEX = 0, 1, 2, 3


class Vocabulary:
    """Map tokens to ids and back; ids 0-3 are ``<pad> <unk> <bos> <eos>``."""

    def __init__(self, itos: Iterable[str]) -> None:
        self.itos: list[str] = list(itos)
        if tuple(self.itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary: must start with {' '.join(SPECIALS)}, got {' '.join(self.itos[:4])}")
        self.stoi: dict[str, int] = {token: index for index, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            duplicates = sorted(t for t, n in Counter(self.itos).items() if n > 1)
            raise ValueError(f"vocabulary: duplicate tokens {duplicates[:5]}")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocabulary:
        """Keep tokens seen ``min_freq`` times or more, the ``max_size`` most frequent (specials not counted)."""
        counts = Counter(token for sentence in sentences for token in sentence)
        for special in SPECIALS:
            counts.pop(special, None)
        # Frequency first, then alphabetical, so the same corpus always gives the same ids.
        kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size]
        return cls([*SPECIALS, *kept])

    @classmethod
    def from_list(cls, itos: Sequence[str]) -> Vocabulary:
        """Rebuild from ``to_list()`` output (e.g. a checkpoint's datamodule state)."""
        return cls(itos)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a file written by ``save`` (one token per line)."""
        return cls(Path(path).read_text(encoding="utf-8").split("\n")[:-1])

    def to_list(self) -> list[str]:
        """All tokens in id order: plain data, safe for ``torch.load(weights_only=True)``."""
        return list(self.itos)

    def save(self, path: str | Path) -> Path:
        """Write one token per line, in id order."""
        path = Path(path)
        path.write_text("".join(token + "\n" for token in self.itos), encoding="utf-8")
        return path

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens: {' '.join(self.itos[4:10])} ...)"

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids, ``<unk>`` for unknown tokens; no specials added."""
        stoi = self.stoi
        return [stoi.get(token, UNK_INDEX) for token in tokens]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Tokens up to the first ``<eos>``, skipping ``<pad>`` and ``<bos>``; ``ids`` shape ``(length,)``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        tokens = []
        for index in ids:
            if index == EOS_INDEX:
                break
            if index not in (PAD_INDEX, BOS_INDEX):
                tokens.append(self.itos[index])
        return tokens
