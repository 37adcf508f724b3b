"""Lightning callbacks of dlrun: throughput, finite-loss guard, config in checkpoints, epoch lines."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from dlrun.errors import ConfigError, TrainingError


class Throughput(pl.Callback):
    """Log ``train/<unit>_per_s`` per epoch, timed over the training steps only (not validation)."""

    def __init__(self, count_units: Callable[[Any], Any], unit: str = "samples") -> None:
        self.count_units = count_units
        self.unit = unit
        self._start: float | None = None
        self._end = 0.0
        self._validations: list[tuple[float, float]] = []
        self._units: Any = 0
        self._val_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        warm_type_checks()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._end, self._validations, self._units = None, 0.0, [], 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Counts may be device tensors (tokens); summing them keeps the hot path free of host syncs.
        self._units = self._units + self.count_units(batch)
        self._end = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is not None and not trainer.sanity_checking:
            self._validations.append((self._val_start, time.perf_counter()))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None:
            return
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        # Mid-epoch validation (val_check_interval < 1) falls inside the timed window: take it out.
        inside = sum(end - start for start, end in self._validations if end <= self._end)
        elapsed = self._end - self._start - inside
        units = float(self._units)
        if elapsed > 0 and units > 0:
            name = f"train/{self.unit}_per_s"
            # Each rank's estimate of the whole job's rate, averaged over ranks (once an epoch: no hot-path sync).
            pl_module.log(name, units * trainer.world_size / elapsed, on_epoch=True, sync_dist=True)


def warm_type_checks() -> None:
    """Pay, before the first step, once-per-process costs that Lightning's first ``self.log`` would pay inside it.

    Logging walks its records with ``isinstance`` checks against ABCs (``Mapping``, ``Sequence``,
    ``torchmetrics.Metric``); for a type not seen before, Python's ABC machinery walks every registered
    subclass, and with MLflow's dependencies loaded the first ``isinstance(torch.float32, Mapping)`` took
    0.3 s here (8% of a one-epoch MNIST MLP's measured throughput). Answers are cached per type.
    """
    from collections.abc import Mapping, Sequence

    from torchmetrics import Metric

    samples = (torch.float32, torch.device("cpu"), torch.zeros(()), warm_type_checks, len, None, True, 0, 0.0, "", {})
    for sample in samples:
        for abc in (Mapping, Sequence, Metric):  # one by one: a tuple stops at the first match
            isinstance(sample, abc)


class FiniteLoss(pl.Callback):
    """Stop with a clear error when the training loss becomes NaN or infinite.

    The check syncs with the device only every ``every_n_steps`` steps, so it costs nothing on the hot path.
    Between checks the losses are summed (one small op per step, not three): the sum is finite exactly when
    every loss is, short of finite losses overflowing float32 (above 3e38), which is divergence too.
    """

    def __init__(self, every_n_steps: int = 25) -> None:
        self.every_n_steps = every_n_steps
        self._sum: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach().float()  # float16 sums would overflow early; a no-op for float32 losses
        self._sum = loss if self._sum is None else self._sum + loss
        if (batch_idx + 1) % self.every_n_steps == 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: pl.Trainer) -> None:
        """Raise TrainingError if any loss since the last check was not finite."""
        if self._sum is not None and not bool(torch.isfinite(self._sum)):
            self._sum = None
            raise TrainingError(
                f"train/loss became NaN or infinite in epoch {trainer.current_epoch + 1} "
                f"(by step {trainer.global_step}); "
                "lower optimizer.lr or set trainer.gradient_clip_val"
            )
        self._sum = None


class OnFirstStep(pl.Callback):
    """Call ``action`` once, when the first training step of this fit starts."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.done = False

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.done:
            self.done = True
            self.action()


class MonitorLogged(pl.Callback):
    """Stop with one line when the monitored metric is never logged, naming the key and what the module logs.

    Checked after the sanity-check validation (before the first training epoch; a ``train*`` metric waits),
    and again after the first validation: otherwise Lightning's checkpoint raises only at the first epoch's end.
    """

    def __init__(self, monitor: str, key: str) -> None:
        self.monitor, self.key = monitor, key
        self.done = False

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.monitor.startswith("train"):
            self.check(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and not self.done:
            self.done = True
            self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Raise ConfigError unless the monitor is among the metrics logged so far."""
        logged = sorted(trainer.callback_metrics)
        if self.monitor not in logged:
            name = type(pl_module).__name__
            raise ConfigError(
                f"{self.key}: {name} never logs {self.monitor!r}; it logs {', '.join(logged) or 'nothing'} "
                "(set checkpoint.monitor to one of them)"
            )


class EmbedConfig(pl.Callback):
    """Store the resolved run config in every checkpoint as plain data (``checkpoint['dlrun']``)."""

    def __init__(self, config: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        self.config = config
        self.extra = extra or {}

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["dlrun"] = {"config": self.config, **self.extra}


class EpochLine(pl.Callback):
    """One line of metrics per epoch, for terminals without a progress bar (CI logs, ``nohup``)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k.removesuffix("_epoch"): float(v) for k, v in trainer.callback_metrics.items() if "/" in k}
        text = "  ".join(f"{k} {_fmt(v)}" for k, v in sorted(metrics.items()) if not k.endswith("_step"))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {text}", flush=True)


def _fmt(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
