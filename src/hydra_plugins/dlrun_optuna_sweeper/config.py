"""Structured configs of the sweeper (``hydra/sweeper=optuna``), its samplers and pruners, in Hydra's ConfigStore.

Imported by Hydra's plugin scan on every start: keep it free of Optuna and dlrun imports.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PROVIDER = "dlrun"


# ---- samplers (hydra/sweeper/sampler=tpe|random|cmaes|grid): instantiated by Hydra, as in hydra-optuna-sweeper


@dataclass
class TPESamplerConf:
    """optuna.samplers.TPESampler; other arguments: ``+hydra.sweeper.sampler.NAME=...``."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    constant_liar: bool = True  # parallel trials: running ones count as bad guesses, so a batch spreads out


@dataclass
class RandomSamplerConf:
    """optuna.samplers.RandomSampler."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConf:
    """optuna.samplers.CmaEsSampler (needs ``pip install cmaes``)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    n_startup_trials: int = 1
    sigma0: float | None = None
    consider_pruned_trials: bool = False
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


@dataclass
class GridSamplerConf:
    """optuna.samplers.GridSampler over every point of ``choice``/``range`` params; n_trials capped at the grid size."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # the grid itself comes from hydra.sweeper.params
    seed: int | None = None


# ---- pruners (hydra/sweeper/pruner=...; or hydra.sweeper.pruner=NAME with Optuna's default settings)


@dataclass
class NoPrunerConf:
    """No pruning: every trial runs all its epochs."""

    name: str = "none"


@dataclass
class MedianPrunerConf:
    """Stop a trial whose value at a validation is worse than the median of earlier trials at the same one."""

    name: str = "median"
    n_startup_trials: int = 5  # trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # validations of each trial never pruned
    interval_steps: int = 1
    n_min_trials: int = 1  # trials that must have reported at a step before it can prune there


@dataclass
class PercentilePrunerConf:
    """Like median, at another percentile (25.0: keep only trials in the best quarter)."""

    name: str = "percentile"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConf:
    """Hyperband over validations (``max_resource``: trainer.max_epochs, or ``auto``)."""

    name: str = "hyperband"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class SuccessiveHalvingPrunerConf:
    """Asynchronous successive halving."""

    name: str = "successive_halving"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0


@dataclass
class DlrunOptunaSweeperConf:
    """``hydra.sweeper`` of dlrun's Optuna sweeper; the keys of hydra-optuna-sweeper 1.3 keep their meaning."""

    _target_: str = "hydra_plugins.dlrun_optuna_sweeper.optuna_sweeper.DlrunOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING  # a pruner group's node (default: none), or just its name: hydra.sweeper.pruner=median
    direction: Any = None  # minimize | maximize; null: follows checkpoint.mode, else the objective's mode
    storage: str | None = None  # null: optuna.db beside MLflow's SQLite file (else the working directory)
    study_name: str | None = None  # null: the hparams_search preset's name, else the experiment's, else dlrun
    n_trials: int = 20  # finished trials (COMPLETE + PRUNED) the study should have: a rerun runs only the rest
    n_jobs: int | None = None  # trials launched together; null: as many as the launcher runs at once
    workers: int = 1  # search processes on this machine sharing the study: asynchronous slots, one trial each
    heartbeat_interval: int = 10  # s between a worker's heartbeats on the trials it runs (its lease)
    grace_period: int | None = None  # s without a heartbeat before any worker marks the trial FAIL; null: 2x interval
    max_failure_rate: float = 0.0  # stop launching once this fraction of this run's trials failed
    params: dict[str, Any] | None = None  # the search space: key: choice(...) | range(...) | interval(...)
    custom_search_space: str | None = None  # dotted path of f(cfg, trial) that suggests more params


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=DlrunOptunaSweeperConf, provider=PROVIDER)
for _name, _node in (
    ("tpe", TPESamplerConf),
    ("random", RandomSamplerConf),
    ("cmaes", CmaEsSamplerConf),
    ("grid", GridSamplerConf),
):
    store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider=PROVIDER)
for _name, _node in (
    ("none", NoPrunerConf),
    ("median", MedianPrunerConf),
    ("percentile", PercentilePrunerConf),
    ("hyperband", HyperbandPrunerConf),
    ("successive_halving", SuccessiveHalvingPrunerConf),
):
    store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider=PROVIDER)
