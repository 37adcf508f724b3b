"""Lightning's MLflow logger, bound to a run whose life dlrun manages itself."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only


class RunLogger(MLFlowLogger):
    """Log Lightning metrics into an existing run; never end it and never log params (dlrun does both).

    While ``deferring`` (set by ``DeferStepMetrics`` during an epoch's training steps), metrics are queued
    and written in one batch at most every ``flush_every_s`` seconds: one write to a SQLite store takes
    ~20 ms, 3% of an MNIST MLP epoch when made every 50 steps. Everything else (validation, epoch-level
    metrics) is written at once, after the queue; ``finalize`` (end of fit/test, failures) writes the queue.
    """

    def __init__(self, tracking_uri: str, run_id: str, flush_every_s: float = 10.0, writer: Any = None) -> None:
        super().__init__(tracking_uri=tracking_uri, run_id=run_id, log_model=False)
        self.writer = writer  # the run's own client (its spool while the server is away); None: Lightning's
        self.flush_every_s = flush_every_s
        self.deferring = False
        self._pending: list[Any] = []
        self._flushed_at = time.monotonic()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Write metrics as ``MLFlowLogger`` would; while deferring, only once ``flush_every_s`` has passed."""
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        for key, value in metrics.items():
            if not isinstance(value, str):  # MLFlowLogger drops strings and strips characters MLflow refuses
                name = re.sub("[^a-zA-Z0-9_/. -]+", "", key)
                self._pending.append(Metric(key=name, value=value, timestamp=timestamp_ms, step=step or 0))
        if not self.deferring or time.monotonic() - self._flushed_at >= self.flush_every_s:
            self.flush()

    @rank_zero_only
    def flush(self) -> None:
        """Write the queued metrics now (in MLflow's batches of at most 1000)."""
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        for start in range(0, len(pending), 1000):
            (self.writer or self.experiment).log_batch(self.run_id, metrics=pending[start : start + 1000])

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The resolved config is logged once by dlrun, flattened; Lightning's copy would collide."""

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Write what is queued; the status is set by ``tracked_run`` after test, not after fit."""
        self.deferring = False
        self.flush()


class DeferStepMetrics(pl.Callback):
    """Let the trainer's ``RunLogger``s queue the metrics of training steps, and write them before
    validation and at the end of each training epoch (so epoch and validation metrics appear at once)."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._set(trainer, True)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set(trainer, False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set(trainer, False)

    @staticmethod
    def _set(trainer: pl.Trainer, deferring: bool) -> None:
        for logger in trainer.loggers:  # resume swaps in its own RunLogger after the trainer is built
            if isinstance(logger, RunLogger) and logger.deferring != deferring:
                logger.deferring = deferring
                if not deferring:
                    logger.flush()
