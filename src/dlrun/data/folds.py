"""k-fold cross-validation splits of a training set: stratified by label, seeded, disjoint, covering every example.

The pool is a data module's whole training set (its training and validation splits together, see
``dlrun.contracts.DataModule.training_labels``); fold ``i`` validates on one K-th of it and trains on the
rest. The test split never enters the pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dlrun.errors import ConfigError


@dataclass(frozen=True)
class Fold:
    """Fold ``index`` of ``folds``: indices into the pool to train on and to validate on (each sorted)."""

    index: int
    folds: int
    seed: int
    train: torch.Tensor  # (n_train,) int64
    val: torch.Tensor  # (n_val,) int64

    @property
    def pool_size(self) -> int:
        """Examples in the whole pool (train + val)."""
        return len(self.train) + len(self.val)

    def val_digest(self) -> str:
        """sha256 (16 hex digits) of the sorted validation indices: equal digests, equal folds."""
        return hashlib.sha256(self.val.numpy().astype("<i8").tobytes()).hexdigest()[:16]

    def record(self, labels: torch.Tensor) -> dict[str, Any]:
        """Plain data for the run's ``cv_fold.json``: which pool examples validated, and their labels' counts."""
        counts = torch.bincount(labels[self.val]).tolist() if len(self.val) else []
        return {
            "fold": self.index,
            "folds": self.folds,
            "seed": self.seed,
            "pool_size": self.pool_size,
            "val_count": len(self.val),
            "val_digest": self.val_digest(),
            "val_label_counts": counts,
            "val_indices": self.val.tolist(),
        }


def fold_ids(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """The fold (0..folds-1) of every pool example, ``(n,)``: each label's examples dealt round-robin after a
    seeded shuffle, so every fold holds each class within one example of ``count / folds``."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    # A stable sort by label keeps the shuffled order inside each class: classes one after the other.
    by_class = order[torch.sort(labels[order], stable=True).indices]
    ids = torch.empty(len(labels), dtype=torch.long)
    ids[by_class] = torch.arange(len(labels)) % folds
    return ids


def make_fold(labels: Sequence[Any] | torch.Tensor, folds: int, index: int, seed: int) -> Fold:
    """Fold ``index`` of a stratified, seeded ``folds``-fold split of a pool with these ``labels`` ``(n,)``."""
    labels = class_ids(labels)
    if not 0 <= index < folds:
        raise ConfigError(f"cv.fold: must be in 0..{folds - 1}, got {index}")
    if len(labels) < folds:
        raise ConfigError(f"cv.folds: {folds} folds of a training set of {len(labels)} examples")
    ids = fold_ids(labels, folds, seed)
    train, val = torch.nonzero(ids != index).flatten(), torch.nonzero(ids == index).flatten()
    return Fold(index, folds, seed, train, val)


def class_ids(labels: Sequence[Any] | torch.Tensor) -> torch.Tensor:
    """Labels as int64 class ids ``(n,)``: integer tensors as they are, anything else by first appearance."""
    if isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.dim() == 1:
        return labels.long().cpu()
    seen: dict[Any, int] = {}
    return torch.tensor([seen.setdefault(label, len(seen)) for label in labels], dtype=torch.long)
