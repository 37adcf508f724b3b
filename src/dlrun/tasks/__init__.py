"""Dispatch ``task=train|eval|predict|summary`` to its module; each task reads top to bottom in its own file.

Below the task modules, what they share: ``job`` (the Hydra job and its MLflow run spec), ``checks`` (config
checks before any run opens), ``parts`` (data module and objective built from the config), ``trainer`` (the
Trainer with its callbacks and logger), ``checkpoints`` and ``resume`` (finding trained weights).
"""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig

from dlrun.errors import ConfigError
from dlrun.logs import quiet_third_party

# task name -> (module, function); imported only when chosen, so `eval` never loads training's callbacks.
TASKS = {
    "train": ("dlrun.tasks.train", "train"),
    "eval": ("dlrun.tasks.evaluate", "evaluate"),
    "predict": ("dlrun.tasks.predict", "predict"),
    "summary": ("dlrun.tasks.summary", "summary"),
    "average": ("dlrun.tasks.average", "average"),
}


def run_task(cfg: DictConfig) -> Any:
    """Run the task ``cfg.task`` names and return its result."""
    if cfg.task not in TASKS:
        raise ConfigError(f"task: {cfg.task!r} is not one of {', '.join(TASKS)}")
    module, function = TASKS[cfg.task]
    from dlrun.sweeping.threads import apply_thread_budget

    apply_thread_budget(cfg)  # resources.threads: all cores for one job, a share when a launcher runs several
    with quiet_third_party():
        return getattr(importlib.import_module(module), function)(cfg)
