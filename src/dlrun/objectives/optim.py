"""Optimizer and LR-schedule assembly shared by every LightningModule of dlrun."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def configure_optimizers(
    parameters: Iterable[torch.nn.Parameter],
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    monitor: str,
) -> dict[str, Any]:
    """Return Lightning's ``configure_optimizers`` dict; plateau schedules watch ``monitor``."""
    opt = optimizer(parameters)
    if scheduler is None:
        return {"optimizer": opt}
    sched = scheduler(opt)
    config: dict[str, Any] = {"scheduler": sched, "interval": "epoch"}
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = monitor
    return {"optimizer": opt, "lr_scheduler": config}
