"""Batch samplers: iterators of index lists, seeded per epoch and split across DDP ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochBatchSampler(Sampler[list[int] | torch.Tensor]):
    """Base of dlrun's samplers: each epoch's batches come from ``seed + epoch``, sharded over ranks.

    Lightning calls ``set_epoch``, so every epoch reshuffles and runs are reproducible. With
    ``num_replicas > 1`` each rank takes every ``num_replicas``-th batch: trimmed to equal counts
    when ``even`` (training, where ranks step together), else all of them (evaluation, so that
    every example counts once; ranks may then differ by one batch).
    """

    def __init__(self, seed: int = 0, num_replicas: int = 1, rank: int = 0, even: bool = True) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank: must be in [0, {num_replicas}), got {rank}")
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.even = even
        self.epoch = 0
        self.as_tensors = False  # yield index tensors instead of lists (datasets that index tensors with them)

    def set_epoch(self, epoch: int) -> None:
        """Select the batches of the given epoch."""
        self.epoch = epoch

    def _all_batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        """Every batch of the epoch, for all ranks together."""
        raise NotImplementedError

    def _num_batches(self) -> int:
        """How many batches ``_all_batches`` returns."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int] | torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for batch in shard(self._all_batches(generator), self.num_replicas, self.rank, self.even):
            yield batch if self.as_tensors else batch.tolist()

    def __len__(self) -> int:
        return len(shard(range(self._num_batches()), self.num_replicas, self.rank, self.even))


class RandomBatchSampler(EpochBatchSampler):
    """Batches of ``batch_size`` consecutive indices of a permutation (or of the file order, unshuffled)."""

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
        super().__init__(seed, num_replicas, rank, even)
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last

    def _all_batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        if self.shuffle:
            order = torch.randperm(self.num_examples, generator=generator)
        else:
            order = torch.arange(self.num_examples)
        batches = list(order.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def _num_batches(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


def ordered_batches(num_examples: int, batch_size: int, num_replicas: int = 1, rank: int = 0) -> RandomBatchSampler:
    """Evaluation batches in file order; batch k goes to rank ``k % num_replicas``; nothing is dropped."""
    return RandomBatchSampler(num_examples, batch_size, shuffle=False, num_replicas=num_replicas, rank=rank, even=False)


def shard(batches: list, num_replicas: int, rank: int, even: bool = True) -> list:
    """Give ``rank`` every ``num_replicas``-th batch; ``even`` trims so all ranks get the same count."""
    if num_replicas <= 1:
        return batches
    usable = len(batches) - len(batches) % num_replicas if even else len(batches)
    return batches[rank:usable:num_replicas]


def whole_batch_loader(dataset: Dataset, sampler: Sampler, num_workers: int = 0) -> DataLoader:
    """A DataLoader over a sampler that yields whole batches (id lists, windows) which the dataset cuts at once.

    ``batch_size=None`` also puts the sampler at ``dataloader.sampler``, where Lightning calls ``set_epoch``.
    """
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
