"""A plain Lightning pair that imports nothing from dlrun: dlrun trains, records, resumes and evaluates it as is."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def rings(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 2-D points on two noisy concentric rings: features ``(n, 2)``, labels ``(n,)`` (0 inner, 1 outer)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    radius = 0.5 + 0.5 * labels + 0.15 * torch.randn(n, generator=generator)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1), labels


class RingsData(pl.LightningDataModule):
    """Two rings, generated in memory: 2,000 training, 500 validation and 500 test points."""

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        self.train_set = TensorDataset(*rings(2000, self.seed))
        self.val_set = TensorDataset(*rings(500, self.seed + 1))
        self.test_set = TensorDataset(*rings(500, self.seed + 2))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=250)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=250)


class RingsClassifier(pl.LightningModule):
    """A small MLP with its own optimizer; logs val/loss, val/acc, test/loss and test/acc."""

    def __init__(self, hidden: int = 32, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2)
        )
        self.example_input_array = torch.zeros(4, 2)  # Lightning's convention; dlrun's summary uses it too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", nn.functional.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/acc", (logits.argmax(-1) == y).float().mean(), sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
