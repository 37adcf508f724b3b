"""``last.ckpt`` after every epoch: the point a crashed or killed run resumes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning import callbacks


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (same name, so the same state key in checkpoints), key worked out once.

    Lightning reads ``callback.state_key`` at every callback hook call, ~7 times a training step, and
    ``ModelCheckpoint`` rebuilds it from its settings each time (~9 us here, ~1% of an MNIST MLP step
    for two of them). Its settings do not change after construction.
    """

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint{'monitor': ..., 'mode': ..., ...}``, as Lightning's."""
        key = self.__dict__.get("_state_key")
        if key is None:
            key = self.__dict__["_state_key"] = super().state_key
        return key

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Lightning's per-step checkpointing; with neither a step nor a time interval set there is nothing to do."""
        if self._every_n_train_steps < 1 and self._train_time_interval is None and pl_module.automatic_optimization:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def last_checkpoint(dirpath: Path) -> ModelCheckpoint:
    """A checkpoint callback that overwrites ``dirpath/last.ckpt`` at the end of every epoch.

    Lightning 2.6's ``save_last=True`` writes ``last.ckpt`` only when a top-k checkpoint was saved in the
    same step, so a run whose metric stops improving would resume epochs behind. Put this callback after
    the top-k one: the file then also holds that callback's latest state.
    """
    return ModelCheckpoint(
        dirpath=dirpath,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_last=False,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
