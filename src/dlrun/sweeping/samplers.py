"""A seeded sampler that never repeats itself across reruns and workers: trial ``k`` draws with ``seed + k``.

One seeded sampler per process would replay its draws in every process that builds it: a rerun of the
command (trials 3, 4, 5 drawing what 0, 1, 2 drew) and every worker of a shared study. Trial numbers are
unique in the study (the storage hands them out), so reseeding per trial number keeps draws distinct and
the search reproducible trial by trial, whichever worker runs which trial.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


class TrialSeeded(BaseSampler):
    """Delegates to ``build(seed)``, rebuilt for each trial with ``seed + trial.number`` before it draws."""

    def __init__(self, build: Callable[[int], BaseSampler], seed: int) -> None:
        self.build, self.seed = build, int(seed)
        self.inner = build(self.seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Rebuild the sampler for this trial (Optuna calls this once the trial has its number, before any draw)."""
        self.inner = self.build(self.seed + trial.number)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The inner sampler's."""
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The inner sampler's."""
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """The inner sampler's."""
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """The inner sampler's."""
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """The inner sampler's (Optuna reseeds for threads of ``optimize``; dlrun's workers are processes)."""
        self.inner.reseed_rng()
