"""LightningModule for classifiers: cross-entropy, accuracy, optimizer wiring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dlrun._upstream import lightning_attached_trainer
from dlrun.callbacks.progress import bar_shows_metrics, step_is_shown
from dlrun.config.plain import plain
from dlrun.contracts import RunContext
from dlrun.objectives.base import NetworkObjective
from dlrun.objectives.optim import OptimizerFactory, SchedulerFactory


class ClassificationModule(NetworkObjective):
    """Train any ``(batch, ...) -> (batch, num_classes)`` network with (weighted, smoothed) cross-entropy."""

    throughput_unit = "samples"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
        monitor: str = "val/acc",
        mode: Literal["min", "max"] = "max",
    ) -> None:
        super().__init__(net, optimizer, scheduler, monitor, mode, label_smoothing)
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights: need {num_classes} weights, got {len(class_weights)}")
        # Only plain data goes into the checkpoint's hyper_parameters (loadable with weights_only=True):
        # Hydra passes list values as ListConfig, which save_hyperparameters would store as is.
        class_weights = plain(class_weights)
        self.save_hyperparameters(ignore=self.IGNORED)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)``."""
        return self.net(x)

    def example_input(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The network's input part of a batch (for shape summaries)."""
        return batch[0]

    def count_units(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        """Samples in a batch, for throughput."""
        return len(batch[1])

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """After testing: a confusion matrix and misclassified examples under ``plots/`` (when plots are wanted)."""
        if not run.plots:
            return []
        from dlrun.callbacks.classification_plots import ClassificationPlots

        return [ClassificationPlots(run.output_dir, publish=run.publish)]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Cross-entropy of one batch."""
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        trainer = lightning_attached_trainer(self)
        if trainer is None or step_is_shown(trainer, batch_idx):
            self.log(
                "train/loss", loss, on_step=True, on_epoch=False, prog_bar=bar_shows_metrics(trainer), batch_size=len(y)
            )
        return loss

    def _evaluate(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, accuracy: MulticlassAccuracy
    ) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        self.log(f"{stage}/loss", self.loss_fn(logits, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        accuracy.update(logits, y)
        self.log(f"{stage}/acc", accuracy, on_epoch=True, batch_size=len(y))
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Loss and accuracy on validation data."""
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Loss and accuracy on test data; the logits go to callbacks (confusion matrix, misclassified images)."""
        return self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities ``(batch, num_classes)``."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.net(x).softmax(dim=-1)
