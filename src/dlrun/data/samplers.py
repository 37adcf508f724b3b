"""Batch samplers: iterators of index lists, seeded per epoch and split across DDP ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class RandomBatchSampler(Sampler[list[int]]):
    """Yield batches of example indices from a (optionally shuffled) permutation.

    Each epoch's order is drawn from ``seed + epoch``, so runs are reproducible and
    ``set_epoch`` (called by Lightning) reshuffles. With ``num_replicas > 1`` every
    rank takes a disjoint share of the batches: equally long when ``even`` (training, where
    ranks step together), else every batch once (evaluation, so no example is left out).
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        even: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.even = even
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of the given epoch."""
        self.epoch = epoch

    def _all_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_examples, generator=generator)
        else:
            order = torch.arange(self.num_examples)
        batches = list(order.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        yield from (b.tolist() for b in shard(batches, self.num_replicas, self.rank, self.even))

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        count = full + (1 if rest and not self.drop_last else 0)
        if self.num_replicas <= 1:
            return count
        if self.even:
            return count // self.num_replicas
        return len(range(self.rank, count, self.num_replicas))


def shard(batches: list, num_replicas: int, rank: int, even: bool = True) -> list:
    """Give ``rank`` every ``num_replicas``-th batch; ``even`` trims so all ranks get the same count."""
    if num_replicas <= 1:
        return batches
    usable = len(batches) - len(batches) % num_replicas if even else len(batches)
    return batches[rank:usable:num_replicas]
