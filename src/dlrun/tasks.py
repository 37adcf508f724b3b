"""Dispatch ``task=train|eval|predict|summary`` to its module; each task reads top to bottom in its own file.

The wiring the tasks share lives below them in ``dlrun.wiring``; nothing here is imported back.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig

from dlrun.errors import ConfigError

# task name -> (module, function); imported only when chosen, so `eval` never loads training's callbacks.
TASKS = {
    "train": ("dlrun.train", "train"),
    "eval": ("dlrun.evaluate", "evaluate"),
    "predict": ("dlrun.predict", "predict"),
    "summary": ("dlrun.summary", "summary"),
}

# Start-up chatter of third-party loggers and known harmless warnings, silenced while a dlrun task runs only.
QUIET_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "mlflow.store.db.utils")
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*is smaller than the logging interval.*",
    # Testing a checkpoint never needs the callbacks that wrote it (they matter for resuming a fit only).
    r".*Be aware that when using `ckpt_path`, callbacks used to create.*",
    r".*The dirpath has changed from .* won't be reloaded.*",
    r".*Checkpoint directory .* exists and is not empty.*",  # a resumed run writes into its own folder again
)


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Lightning's hardware lines and ads, MLflow's migration notes and known warnings: off for the task, restored after."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def run_task(cfg: DictConfig) -> Any:
    """Run the task ``cfg.task`` names and return its result."""
    if cfg.task not in TASKS:
        raise ConfigError(f"task: {cfg.task!r} is not one of {', '.join(TASKS)}")
    module, function = TASKS[cfg.task]
    with quiet_third_party():
        return getattr(importlib.import_module(module), function)(cfg)
