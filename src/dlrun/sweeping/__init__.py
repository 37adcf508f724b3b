"""Hyperparameter searches: dlrun's Optuna sweeper (study, search space, pruners) and what a trial job needs.

A trial job learns which trial it is from the keys the sweeper adds to its config (``+trial.study=NAME
+trial.storage=URL +trial.number=N``); outside a search they are absent and nothing here does anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def sweep_dir(hydra_cfg: Any) -> Path:
    """The sweep's directory, absolute (relative ``hydra.sweep.dir`` is taken from the launch directory)."""
    folder = Path(str(hydra_cfg.sweep.dir))
    return folder if folder.is_absolute() else Path(str(hydra_cfg.runtime.cwd)) / folder


def optimized_metric(cfg: Any, monitor: str | None = None) -> str | None:
    """What a job returns to its sweep: ``optimized_metric``, else ``checkpoint.monitor``, else the objective's.

    ``monitor``: the monitor the built objective reports (a plain module's own attribute), when known.
    """
    from omegaconf import OmegaConf

    for key in ("optimized_metric", "checkpoint.monitor", "objective.monitor"):
        value = OmegaConf.select(cfg, key, default=None)
        if value:
            return str(value)
    return monitor


def configured_mode(cfg: Any) -> str | None:
    """``min`` or ``max`` as the config says it: ``checkpoint.mode``, else the objective's ``mode``; None if neither."""
    from omegaconf import OmegaConf

    for key in ("checkpoint.mode", "objective.mode"):
        value = OmegaConf.select(cfg, key, default=None)
        if value in ("min", "max"):
            return str(value)
    return None


def optimized_mode(cfg: Any, mode: str | None = None) -> str:
    """``min`` or ``max`` for ``optimized_metric``: ``checkpoint.mode``, the objective's, ``mode``, else max."""
    return configured_mode(cfg) or mode or "max"


def trial_callbacks(cfg: Any, monitor: str, mode: str) -> list[Any]:
    """Callbacks of an Optuna trial job (report ``monitor`` at every validation, stop when pruned); [] otherwise."""
    from omegaconf import OmegaConf

    trial = OmegaConf.select(cfg, "trial")
    if not trial or OmegaConf.select(trial, "number") is None:
        return []
    if OmegaConf.select(cfg, "cv.fold", default=None) is not None:
        from dlrun.logs import say_once

        # K fold jobs of one trial would report K values per epoch to it: the pruner judges whole trials only.
        say_once("cross-validation: trials are not pruned (a trial's folds run as separate jobs)")
        return []
    from dlrun.sweeping.callback import TrialPruning
    from dlrun.sweeping.study import StudyRef

    return [TrialPruning(StudyRef(str(trial.storage), str(trial.study)), int(trial.number), monitor, mode)]
