"""The MNIST data module on the real files: splits, batches, normalization; the batch sampler's epochs and shards."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import torch

from dlrun.data.mnist import MEAN, STD, MNISTDataModule
from dlrun.data.samplers import RandomBatchSampler, shard
from helpers import TRAIN_COUNTS


def loaded(data_root: Path, seed: int) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_root), seed=seed, download=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def dm(data_root: Path) -> MNISTDataModule:
    return loaded(data_root, seed=0)


def fingerprints(images: torch.Tensor, labels: torch.Tensor) -> Counter:
    """Multiset of (image bytes hash, label) pairs."""
    flat = images.reshape(len(images), -1).numpy()
    return Counter(
        (hashlib.blake2b(row.tobytes(), digest_size=12).digest(), int(y)) for row, y in zip(flat, labels, strict=True)
    )


def test_split_sizes(dm: MNISTDataModule) -> None:
    sizes = {name: (len(split), tuple(split.images.shape)) for name, split in dm.splits.items()}
    assert sizes == {
        "train": (55000, (55000, 28, 28)),
        "val": (5000, (5000, 28, 28)),
        "test": (10000, (10000, 28, 28)),
    }
    assert dm.splits["train"].labels.dtype == torch.int64


def test_train_and_val_partition_the_official_training_set(dm: MNISTDataModule, official: dict) -> None:
    train, val = dm.splits["train"], dm.splits["val"]
    counts = torch.bincount(torch.cat([train.labels, val.labels]), minlength=10).tolist()
    assert counts == TRAIN_COUNTS
    # Same (image, label) pairs as the official file, each exactly as often: disjoint, complete, still paired.
    together = fingerprints(train.images, train.labels) + fingerprints(val.images, val.labels)
    assert together == fingerprints(official["train_images"], official["train_labels"])
    # The validation set is a random draw, not the file's first or last 5000.
    assert not torch.equal(val.labels, official["train_labels"][:5000].long())
    assert not torch.equal(val.labels, official["train_labels"][-5000:].long())


def test_test_split_is_the_official_test_set(dm: MNISTDataModule, official: dict) -> None:
    test = dm.splits["test"]
    assert torch.equal(test.labels, official["test_labels"].long())
    assert torch.equal(test.images, official["test_images"])


def test_split_depends_on_seed_only(dm: MNISTDataModule, data_root: Path) -> None:
    again = loaded(data_root, seed=0)
    assert torch.equal(again.splits["val"].labels, dm.splits["val"].labels)
    assert torch.equal(again.splits["val"].images, dm.splits["val"].images)
    other = loaded(data_root, seed=1)
    same_place = (other.splits["val"].images == dm.splits["val"].images).flatten(1).all(1).float().mean()
    assert float(same_place) < 0.05
    assert torch.equal(other.splits["test"].labels, dm.splits["test"].labels)


def test_train_batches_and_normalization(dm: MNISTDataModule) -> None:
    loader = dm.train_dataloader()
    assert len(loader) == 430  # ceil(55000 / 128)
    images, labels = next(iter(loader))
    assert images.shape == (128, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (128,) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) <= 9

    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, labels)
    assert abs(float(x.mean())) < 0.15
    assert 0.85 < float(x.std()) < 1.15
    assert torch.allclose(x[:, 0] * (STD * 255) + MEAN * 255, images.float(), atol=1e-3)


def test_first_train_batch_is_shuffled_and_reproducible(dm: MNISTDataModule) -> None:
    first = next(iter(dm.train_dataloader()))
    again = next(iter(dm.train_dataloader()))
    assert torch.equal(first[0], again[0])
    assert not torch.equal(first[1], dm.splits["train"].labels[:128])


def test_eval_batches_are_in_order(dm: MNISTDataModule) -> None:
    val = list(dm.val_dataloader())
    assert [len(y) for _, y in val] == [1000] * 5
    assert torch.equal(torch.cat([y for _, y in val]), dm.splits["val"].labels)
    test = list(dm.test_dataloader())
    assert len(test) == 10
    assert torch.equal(torch.cat([x for x, _ in test]), dm.splits["test"].images)


# ---------------------------------------------------------------- the batch sampler


def indices(sampler: RandomBatchSampler) -> list[list[int]]:
    return [list(batch) for batch in sampler]


def test_every_epoch_yields_every_index_once() -> None:
    sampler = RandomBatchSampler(1000, 128, seed=3)
    first = indices(sampler)
    assert [len(b) for b in first] == [128] * 7 + [104]
    assert len(sampler) == len(first) == 8
    assert sorted(i for b in first for i in b) == list(range(1000))

    assert indices(sampler) == first  # same epoch, same order
    sampler.set_epoch(1)
    second = indices(sampler)
    assert sorted(i for b in second for i in b) == list(range(1000))
    assert second != first
    assert indices(RandomBatchSampler(1000, 128, seed=3)) == first  # a fresh sampler, same seed
    assert indices(RandomBatchSampler(1000, 128, seed=4)) != first


def test_module_sampler_covers_the_training_split_each_epoch(dm: MNISTDataModule) -> None:
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, RandomBatchSampler)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = torch.tensor([i for batch in sampler for i in batch])
        assert torch.equal(order.sort().values, torch.arange(55000))
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1])


def test_unshuffled_and_drop_last() -> None:
    assert indices(RandomBatchSampler(10, 4, shuffle=False)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = RandomBatchSampler(1000, 128, drop_last=True)
    batches = indices(dropped)
    assert len(dropped) == len(batches) == 7
    assert all(len(b) == 128 for b in batches)


@pytest.mark.parametrize("num_examples", [1000, 1100])  # 8 and 9 batches: even and odd
def test_ddp_ranks_get_disjoint_equal_shares(num_examples: int) -> None:
    shares = []
    for rank in range(2):
        sampler = RandomBatchSampler(num_examples, 128, seed=5, num_replicas=2, rank=rank)
        sampler.set_epoch(2)
        batches = indices(sampler)
        assert len(batches) == len(sampler) == 4
        shares.append([i for b in batches for i in b])
    assert set(shares[0]).isdisjoint(shares[1])
    assert len(set(shares[0])) == len(shares[0]) and len(set(shares[1])) == len(shares[1])
    total = set(shares[0]) | set(shares[1])
    assert total <= set(range(num_examples))
    assert len(total) >= 8 * 128 - 128  # at most the one odd batch is left out


def test_shard_trims_to_equal_counts() -> None:
    batches = list(range(7))
    assert shard(batches, 2, 0) == [0, 2, 4]
    assert shard(batches, 2, 1) == [1, 3, 5]
    assert shard(batches, 1, 0) == batches


def test_evaluation_shards_keep_every_batch() -> None:
    # 5 validation batches on 2 ranks: 3 + 2, every example evaluated once (training would trim to 2 + 2).
    shares = [list(RandomBatchSampler(5000, 1000, shuffle=False, num_replicas=2, rank=r, even=False)) for r in (0, 1)]
    assert [len(s) for s in shares] == [3, 2]
    assert [len(RandomBatchSampler(5000, 1000, shuffle=False, num_replicas=2, rank=r, even=False)) for r in (0, 1)] == [
        3,
        2,
    ]
    assert sorted(i for share in shares for batch in share for i in batch) == list(range(5000))
    assert shard([0, 1, 2, 3, 4], 2, 1, even=False) == [1, 3]
