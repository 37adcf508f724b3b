"""A data module for labelled points in CSV files, written against dlrun's contract (dlrun.contracts.DataModule).

``DATA_DIR/{train,val,test}.csv`` hold rows ``x1,...,xn,label`` with a header line; the whole set
lives in memory as two tensors, batched by index.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from dlrun.contracts import DataModule

SPLITS = ("train", "val", "test")


def read_points(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(n, features)`` float32 and labels ``(n,)`` int64 from one CSV file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run `python make_data.py` to create the example data)")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    if not rows:
        raise ValueError(f"{path}: no rows after the header")
    features = torch.tensor([[float(v) for v in row[:-1]] for row in rows], dtype=torch.float32)
    labels = torch.tensor([int(row[-1]) for row in rows], dtype=torch.long)
    return features, labels


class PointsDataModule(DataModule):
    """Points and labels from CSV files; ``dims`` sizes the network: ``input_shape`` and ``num_classes``."""

    def __init__(self, data_dir: str, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.folder = Path(data_dir)
        self.batch_size = batch_size
        self.seed = seed
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Read every split once."""
        for split in SPLITS:
            if split not in self.splits:
                self.splits[split] = TensorDataset(*read_points(self.folder / f"{split}.csv"))

    @property
    def dims(self) -> dict[str, object]:
        """What the network needs: the feature count as ``input_shape`` and the number of classes."""
        self.setup()
        features, labels = self.splits["train"].tensors
        return {"input_shape": [features.shape[1]], "num_classes": int(labels.max()) + 1}

    def data_files(self) -> dict[str, list[Path]]:
        """One CSV file per split (recorded as the run's dataset inputs)."""
        return {split: [self.folder / f"{split}.csv"] for split in SPLITS}

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (seeded)."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in file order."""
        return DataLoader(self.splits["val"], batch_size=256)

    def test_dataloader(self) -> DataLoader:
        """Test batches in file order."""
        return DataLoader(self.splits["test"], batch_size=256)
