"""What dlrun's own objectives share: a plain network, trained with the optimizer and schedule the config builds."""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from dlrun.contracts import Objective
from dlrun.objectives.hot_path import DirectFxNameWrites
from dlrun.objectives.optim import OptimizerFactory, SchedulerFactory, configure_optimizers


class NetworkObjective(DirectFxNameWrites, Objective):
    """An objective around ``net``: checks the shared settings, keeps the factories, configures the optimizer.

    Subclasses call ``super().__init__(...)`` first, then ``self.save_hyperparameters(ignore=IGNORED)`` with
    their own arguments (only plain data goes into a checkpoint's hyper_parameters: weights_only loads).
    """

    IGNORED = ["net", "optimizer", "scheduler"]  # objects, built again from the config on load

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None,
        monitor: str,
        mode: Literal["min", "max"],
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.monitor, self.mode = monitor, mode
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def configure_optimizers(self) -> dict[str, Any]:
        """Optimizer (and schedule) from the config's factories; plateau schedules watch ``monitor``."""
        return configure_optimizers(self.parameters(), self.optimizer_factory, self.scheduler_factory, self.monitor)
