"""The terminal progress bar redraws every N training steps, and the loss it shows is that step's loss."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlrun.callbacks.progress import ProgressBar
from dlrun.models.mlp import MLP
from dlrun.objectives.classification import ClassificationModule


class Redraws(ProgressBar):
    """dlrun's bar, noting after which batches it redrew."""

    def __init__(self, every_n_steps: int) -> None:
        super().__init__(every_n_steps)
        self.redrawn: list[int] = []

    def _update_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.training:
            self.redrawn.append(trainer.fit_loop.epoch_loop.batch_idx)
        super()._update_metrics(trainer, pl_module)


class ShownLoss(pl.Callback):
    """Per training batch: its own loss and the loss the progress bar holds after it."""

    def __init__(self) -> None:
        self.pairs: list[tuple[float, float | None]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        shown = trainer.progress_bar_metrics.get("train/loss")
        self.pairs.append((float(outputs["loss"]), None if shown is None else float(shown)))


def fit(every_n_steps: int, batches: int = 25) -> tuple[Redraws, ShownLoss]:
    """One epoch of a small MLP on random MNIST-shaped data with the bar and the recorder."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(batches * 8, 1, 28, 28), torch.randint(0, 10, (batches * 8,)))
    net = MLP(input_shape=[1, 28, 28], num_classes=10, hidden_sizes=[16])
    module = ClassificationModule(net, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    bar, shown = Redraws(every_n_steps), ShownLoss()
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
        callbacks=[bar, shown], accelerator="cpu", log_every_n_steps=50,
    )  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=8))
    return bar, shown


def test_bar_redraws_every_n_steps_and_after_the_last() -> None:
    bar, _ = fit(every_n_steps=10)
    assert bar.redrawn == [9, 19, 24, 24]  # after batches 10, 20 and 25 (the last), then at the epoch's end


def test_shown_loss_is_the_loss_of_the_step_drawn() -> None:
    _, shown = fit(every_n_steps=10)
    for step in (9, 19, 24):
        loss, on_bar = shown.pairs[step]
        assert on_bar == pytest.approx(loss), step
    # between redraws the bar keeps the last drawn value: those steps logged nothing
    assert shown.pairs[12][1] == pytest.approx(shown.pairs[9][0])
    assert shown.pairs[12][0] != pytest.approx(shown.pairs[9][0])


def test_every_step_bar_logs_every_step() -> None:
    bar, shown = fit(every_n_steps=1, batches=6)
    assert bar.redrawn == [0, 1, 2, 3, 4, 5, 5]
    assert all(on_bar == pytest.approx(loss) for loss, on_bar in shown.pairs)


def test_every_n_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="progress_every_n_steps: must be >= 1, got 0"):
        ProgressBar(0)
