"""Sentence-pair batches: ragged in-memory storage, padded collate and length-aware batch samplers.

Every sampler yields lists of example ids, reshuffled per epoch from ``seed + epoch`` (Lightning
calls ``set_epoch``), and gives each DDP rank a disjoint share of the batches via ``shard``.
Batching modes (``make_batch_sampler``):

- ``padded``: random batches of ``batch_size``, padded to the fixed ``max_len`` (collate ``pad_to``);
- ``dynamic``: random batches of ``batch_size``, padded to their own longest sentence;
- ``bucket``: length buckets, batches of ``batch_size`` drawn inside a bucket, batch order shuffled;
- ``tokens``: length-sorted batches of up to ``max_tokens`` padded tokens, batch order shuffled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Sampler

from dlrun.data.samplers import EpochBatchSampler, RandomBatchSampler
from dlrun.data.vocab import BOS_INDEX, EOS_INDEX, PAD_INDEX

BATCHING_MODES = ("padded", "dynamic", "bucket", "tokens")


class Ragged:
    """Variable-length id sequences as one flat tensor plus offsets: no padded copy of the corpus."""

    def __init__(self, flat: torch.Tensor, offsets: torch.Tensor) -> None:
        self.flat = flat  # (total_tokens,) int32
        self.offsets = offsets  # (num_sequences + 1,) int64; sequence i is flat[offsets[i]:offsets[i+1]]
        self.lengths = offsets.diff()  # (num_sequences,) int64

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]]) -> Ragged:
        """Pack lists of ids."""
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
        torch.cumsum(lengths, 0, out=offsets[1:])
        flat = torch.tensor([i for s in sequences for i in s], dtype=torch.int32)
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> torch.Tensor:
        """Ids of sequence ``index``, shape ``(length,)``."""
        return self.flat[self.offsets[index] : self.offsets[index + 1]].long()


@dataclass
class TextBatch:
    """Padded sentence pairs, rows sorted by descending source length (as packed RNNs need).

    - ``src``: ``(batch, src_len)`` word ids + ``<eos>``, padded with ``<pad>`` = 0;
    - ``src_lengths``: ``(batch,)`` true source lengths, ``<eos>`` included;
    - ``tgt``: ``(batch, tgt_len)`` ``<bos>`` word ids ``<eos>``, padded with 0;
    - ``ids``: ``(batch,)`` row -> example index in its split (for references and output order).
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return self.src.size(0)

    def count_padding(self, pad_index: int = PAD_INDEX) -> tuple[int, int]:
        """(padding tokens, all tokens) over ``src`` and ``tgt``."""
        padding = int((self.src == pad_index).sum()) + int((self.tgt == pad_index).sum())
        return padding, self.src.numel() + self.tgt.numel()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TextBatch:
        """The same batch on ``device`` (Lightning moves batches itself; this is for plain loops)."""
        return TextBatch(*(t.to(device, non_blocking=non_blocking) for t in self._tensors()))

    def pin_memory(self) -> TextBatch:
        """Page-locked copy, called by ``DataLoader(pin_memory=True)``."""
        return TextBatch(*(t.pin_memory() for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.src, self.src_lengths, self.tgt, self.ids


def pad_fraction(batches: Iterable[TextBatch], pad_index: int = PAD_INDEX) -> float:
    """Padding tokens / all tokens over ``src`` and ``tgt`` of ``batches``."""
    padding = total = 0
    for batch in batches:
        p, t = batch.count_padding(pad_index)
        padding, total = padding + p, total + t
    return padding / total if total else 0.0


def _gather_padded(seqs: Ragged, ids: torch.Tensor, width: int, first: int) -> torch.Tensor:
    """``(batch, width)`` of ``<pad>`` with sequence ``ids[r]`` copied into row r from column ``first``."""
    out = torch.full((len(ids), width), PAD_INDEX, dtype=torch.long)
    lengths = seqs.lengths[ids]
    cols = torch.arange(int(lengths.max()))
    mask = cols < lengths[:, None]  # (batch, longest)
    positions = (seqs.offsets[ids][:, None] + cols)[mask]
    out[:, first : first + len(cols)][mask] = seqs.flat[positions].long()
    return out


def collate(src: Ragged, tgt: Ragged, ids: Sequence[int] | torch.Tensor, pad_to: int | None = None) -> TextBatch:
    """Build a ``TextBatch`` of examples ``ids``; ``pad_to`` fixes the width to ``pad_to`` words + specials.

    Sentences longer than ``pad_to`` widen the batch rather than being cut.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    src_len = src.lengths[ids]
    order = torch.argsort(src_len, descending=True, stable=True)
    ids, src_len = ids[order], src_len[order]
    tgt_len = tgt.lengths[ids]
    rows = torch.arange(len(ids))
    floor = pad_to or 0
    src_ids = _gather_padded(src, ids, max(int(src_len[0]), floor) + 1, first=0)
    src_ids[rows, src_len] = EOS_INDEX
    tgt_ids = _gather_padded(tgt, ids, max(int(tgt_len.max()), floor) + 2, first=1)
    tgt_ids[:, 0] = BOS_INDEX
    tgt_ids[rows, tgt_len + 1] = EOS_INDEX
    return TextBatch(src=src_ids, src_lengths=src_len + 1, tgt=tgt_ids, ids=ids)


class TextDataset(Dataset[TextBatch]):
    """One split's encoded pairs, indexed by a whole batch: ``dataset[list_of_ids] -> TextBatch``."""

    def __init__(self, src: Ragged, tgt: Ragged, pad_to: int | None = None) -> None:
        if len(src) != len(tgt):
            raise ValueError(f"tgt: expected {len(src)} sequences like src, got {len(tgt)}")
        self.src = src
        self.tgt = tgt
        self.pad_to = pad_to

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, ids: Sequence[int]) -> TextBatch:
        """The padded batch of examples ``ids`` (use with ``DataLoader(sampler=..., batch_size=None)``)."""
        return collate(self.src, self.tgt, ids, self.pad_to)


def _pair_widths(src_lengths: torch.Tensor, tgt_lengths: torch.Tensor) -> torch.Tensor:
    """Padded width each pair needs, ``(n,)``: the wider of source + ``<eos>`` and ``<bos>`` target ``<eos>``."""
    return torch.maximum(src_lengths + 1, tgt_lengths + 2)


def _length_order(src_lengths: torch.Tensor, tgt_lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Example ids sorted by source then target length, ties in random order (fairseq's ordered_indices)."""
    order = torch.randperm(len(src_lengths), generator=generator)
    order = order[torch.argsort(tgt_lengths[order], stable=True)]
    return order[torch.argsort(src_lengths[order], stable=True)]


class BucketBatchSampler(EpochBatchSampler):
    """Length bucketing (torchtext BucketIterator style): sort by (source, target) length, batch, shuffle batches.

    Each epoch draws a fresh permutation, cuts it into random pools of ``sort_pool`` batches (0: one pool,
    the whole split), sorts each pool by source then target length (ties stay in random order), cuts it
    into batches of ``batch_size`` and shuffles the order of all batches. One pool pads least (0.04 on
    Multi30k at 128 sentences); smaller pools trade padding for more varied batch composition.
    """

    def __init__(
        self,
        src_lengths: torch.Tensor,
        tgt_lengths: torch.Tensor,
        batch_size: int,
        sort_pool: int = 0,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(seed, num_replicas, rank)
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if sort_pool < 0:
            raise ValueError(f"sort_pool: must be >= 0, got {sort_pool}")
        self.batch_size = batch_size
        self.sort_pool = sort_pool
        self.src_lengths = src_lengths
        self.tgt_lengths = tgt_lengths

    def _all_batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        order = torch.randperm(len(self.src_lengths), generator=generator)
        pool = self.sort_pool * self.batch_size or len(order)
        batches: list[torch.Tensor] = []
        for chunk in order.split(pool):
            chunk = chunk[torch.argsort(self.tgt_lengths[chunk], stable=True)]
            chunk = chunk[torch.argsort(self.src_lengths[chunk], stable=True)]
            batches.extend(chunk.split(self.batch_size))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator)]

    def _num_batches(self) -> int:
        pool = self.sort_pool * self.batch_size or len(self.src_lengths)
        full, rest = divmod(len(self.src_lengths), pool)
        return full * -(-pool // self.batch_size) + -(-rest // self.batch_size)


class TokenBatchSampler(EpochBatchSampler):
    """fairseq style: examples sorted by length, cut into batches of at most ``max_tokens`` padded tokens.

    A batch's cost is its size times its widest side (source + ``<eos>`` or target + ``<bos>``/``<eos>``).
    Batches are fixed once (ties broken by ``seed``), so ``len`` is the same every epoch; each epoch
    shuffles their order. A single pair wider than ``max_tokens`` forms a batch of its own.
    """

    def __init__(
        self,
        src_lengths: torch.Tensor,
        tgt_lengths: torch.Tensor,
        max_tokens: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(seed, num_replicas, rank)
        if max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {max_tokens}")
        self.max_tokens = max_tokens
        order = _length_order(src_lengths, tgt_lengths, torch.Generator().manual_seed(seed))
        widths = _pair_widths(src_lengths, tgt_lengths)[order].tolist()
        self.batches: list[torch.Tensor] = []
        start, widest = 0, 0
        for end, width in enumerate(widths):
            widest = max(widest, width)
            if end > start and widest * (end - start + 1) > max_tokens:
                self.batches.append(order[start:end])
                start, widest = end, width
        if widths:
            self.batches.append(order[start:])

    def _all_batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        return [self.batches[i] for i in torch.randperm(len(self.batches), generator=generator)]

    def _num_batches(self) -> int:
        return len(self.batches)


def make_batch_sampler(
    batching: str,
    src_lengths: torch.Tensor,
    tgt_lengths: torch.Tensor,
    batch_size: int,
    max_tokens: int = 4096,
    sort_pool: int = 0,
    seed: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> Sampler[list[int]]:
    """Training batch sampler of one of ``BATCHING_MODES``; lengths are word counts, shape ``(n,)``."""
    if batching in ("padded", "dynamic"):  # they differ only in collate's pad_to
        return RandomBatchSampler(len(src_lengths), batch_size, seed=seed, num_replicas=num_replicas, rank=rank)
    if batching == "bucket":
        return BucketBatchSampler(src_lengths, tgt_lengths, batch_size, sort_pool, seed, num_replicas, rank)
    if batching == "tokens":
        return TokenBatchSampler(src_lengths, tgt_lengths, max_tokens, seed, num_replicas, rank)
    raise ValueError(f"batching: must be one of {', '.join(BATCHING_MODES)}, got {batching!r}")
