"""Optuna trials under cross-validation (``cv.folds=K``): each trial is K fold jobs, and its value the mean of theirs.

The sweeper launches a trial's folds together (one job each, ``cv.fold=i`` added to the trial's overrides) and
tells Optuna one outcome per trial: FAIL if a fold failed, else PRUNED if one was pruned, else COMPLETE with
the mean over the folds (each fold's value kept as the trial's user attribute ``fold_values``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlrun.config.cross_validation import FOLD_KEY

FOLD_VALUES_ATTR = "fold_values"


def trial_folds(config: DictConfig) -> int:
    """K of ``cv.folds`` (1 without cross-validation): how many jobs one trial is."""
    folds = OmegaConf.select(config, "cv.folds", default=None)
    return int(folds) if folds else 1


def fold_jobs(overrides: Sequence[list[str]], folds: int) -> list[list[str]]:
    """Each trial's overrides once per fold (``cv.fold=0..K-1``), trial after trial; unchanged for one fold."""
    if folds == 1:
        return [list(o) for o in overrides]
    return [[*o, f"{FOLD_KEY}={i}"] for o in overrides for i in range(folds)]


def fold_outcome(outcomes: Sequence[tuple[Any, float | None, str | None]]) -> tuple[Any, float | None, str | None]:
    """One trial's (state, value, error) from its folds' outcomes: a failure wins, then a pruning, else the mean."""
    from optuna.trial import TrialState

    for state, _, error in outcomes:
        if state == TrialState.FAIL:
            return state, None, error
    if any(state == TrialState.PRUNED for state, _, _ in outcomes):
        return TrialState.PRUNED, None, None
    return TrialState.COMPLETE, statistics.fmean(v for _, v, _ in outcomes if v is not None), None


def per_trial(returns: Sequence[Any], folds: int) -> list[Sequence[Any]]:
    """The launcher's returns cut into one slice of ``folds`` per trial, in launch order."""
    return [returns[i : i + folds] for i in range(0, len(returns), folds)]
