"""The terminal progress bar, redrawn every few training steps, and which steps' metrics anyone sees."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from dlrun._upstream import lightning_step_logs_due


class ProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar``, updated every ``every_n_steps`` training steps and at an epoch's end.

    The stock bar updates its task, reads the progress-bar metrics (a host sync per metric on a GPU) and
    redraws after every training batch, and its metrics make every step log them; drawing every 10th step
    keeps the bar live without that cost on the hot path (bench/cli_epoch.py measures it in a terminal).
    """

    def __init__(self, every_n_steps: int = 10) -> None:
        super().__init__(leave=True)
        if every_n_steps < 1:
            raise ValueError(f"callbacks.progress_every_n_steps: must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def shows_step(self, batch_idx: int) -> bool:
        """Whether the bar is redrawn after training batch ``batch_idx`` of the epoch."""
        return (batch_idx + 1) % self.every_n_steps == 0 or batch_idx + 1 >= self.total_train_batches

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.shows_step(batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def bar_shows_metrics(trainer: pl.Trainer | None) -> bool:
    """Whether a progress bar will read the step's metrics: the ``prog_bar`` argument of ``self.log`` in a step.

    Lightning turns every progress-bar metric into a Python number after every training step, and keeps
    doing so for the last logged value on the steps that log nothing: on a GPU that is an ``.item()``, a
    host-device synchronization, per step (0.56 per step over an MNIST epoch's first 100 steps, counted).
    Without a bar (logs, batch jobs, benchmarks) nothing reads them, so they stay off it.
    """
    return trainer is None or trainer.progress_bar_callback is not None


def step_is_shown(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether this training step's ``on_step`` metrics reach a logger, the progress bar or the epoch's last values.

    ``self.log`` costs about 0.3 ms per call even on steps whose value Lightning then drops (a profile of the
    MNIST MLP put it at 6% of a step), so the other steps skip it.
    """
    bar = trainer.progress_bar_callback
    if isinstance(bar, ProgressBar):
        if bar.shows_step(batch_idx):
            return True
    elif bar is not None:  # another bar may draw after any step
        return True
    if trainer.fast_dev_run:
        return True
    try:  # Lightning's own state; should it move, log every step as before
        return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or lightning_step_logs_due(trainer)
    except AttributeError:
        return True
