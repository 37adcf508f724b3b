"""The Optuna search loop behind ``hydra/sweeper=optuna``: ask, launch a batch of trial jobs, tell, until
``n_trials`` trials of the study have finished (COMPLETE or PRUNED), across as many runs of the command as it takes.

Imported only when a search starts (the Hydra plugin in ``hydra_plugins.dlrun_optuna_sweeper`` stays light).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlrun._upstream import hydra_job_value
from dlrun.errors import ConfigError, UserError
from dlrun.sweeping.fold_trials import FOLD_VALUES_ATTR, fold_jobs, fold_outcome, per_trial, trial_folds
from dlrun.sweeping.outcomes import JobFailed, JobPruned
from dlrun.sweeping.pruners import build_pruner, pruner_spec
from dlrun.sweeping.space import SearchSpace, search_space, trial_overrides
from dlrun.sweeping.study import (
    DRIVER_ATTR,
    ERROR_ATTR,
    PRUNER_ATTR,
    StudyRef,
    fail_orphans,
    open_storage,
    study_ref,
    this_driver,
)
from dlrun.sweeping.threads import launcher_parallelism

ORPHAN_REASON = "the search process stopped during this trial (killed or crashed)"


def _quote(value: str) -> str:
    """A Hydra override value that stays one string whatever its characters (``:``, ``/``, spaces)."""
    if "'" in value:
        raise ConfigError(f"hydra.sweeper: {value!r}: quotes are not supported in study names and storage paths")
    return f"'{value}'"


def trial_keys(ref: StudyRef, number: int) -> list[str]:
    """The overrides that tell a job which trial it runs (``+trial.study``, ``+trial.storage``, ``+trial.number``)."""
    return [f"+trial.study={_quote(ref.name)}", f"+trial.storage={_quote(ref.storage)}", f"+trial.number={number}"]


def outcome(ret: Any) -> tuple[Any, float | None, str | None]:
    """Optuna state, value and error of a finished job (a ``JobReturn``)."""
    from hydra.core.utils import JobStatus
    from optuna.trial import TrialState

    value = hydra_job_value(ret)
    if ret.status != JobStatus.COMPLETED:
        return TrialState.FAIL, None, f"{type(value).__name__}: {value}"
    if isinstance(value, JobPruned):
        return TrialState.PRUNED, None, None
    if isinstance(value, JobFailed):
        return TrialState.FAIL, None, value.error
    try:
        number = float(value)
    except (TypeError, ValueError):
        return TrialState.FAIL, None, f"the job returned {value!r}, not a number"
    if not math.isfinite(number):
        return TrialState.FAIL, None, f"the job returned {number}"
    return TrialState.COMPLETE, number, None


def search_direction(config: DictConfig) -> str:
    """``maximize``/``minimize`` from ``checkpoint.mode``, else the objective's ``mode``; refused when neither says."""
    from dlrun.sweeping import configured_mode

    mode = configured_mode(config)
    if mode is not None:
        return f"{mode}imize"
    raise ConfigError(
        "hydra.sweeper.direction: the objective names no mode; set hydra.sweeper.direction=maximize|minimize "
        "(or checkpoint.mode=max|min)"
    )


def check_search(config: DictConfig) -> None:
    """For dlrun's Optuna sweeper: every check of the search settings, as the sweeper will make them (else nothing).

    Hydra opens the sweep (``on_multirun_start``: the parent run) before it builds the sweeper; this lets the
    parent stay closed when the search cannot start.
    """
    node = OmegaConf.select(config, "hydra.sweeper")
    if node is None or "dlrun_optuna_sweeper" not in str(node.get("_target_", "")):
        return
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        sweeper = instantiate(node)
    except InstantiationException as err:
        raise (err.__cause__ if isinstance(err.__cause__, UserError) else err) from None
    search = sweeper.search
    if search.direction is None:
        search.direction = search_direction(config)
    search.check(config)


def _is_grid(sampler: Any) -> bool:
    import optuna

    return isinstance(sampler, optuna.samplers.GridSampler)  # skips the points already run by itself


class OptunaSearch:
    """What ``DlrunOptunaSweeper`` delegates to; the arguments are the ``hydra.sweeper`` config's keys."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int | None,
        max_failure_rate: float,
        params: DictConfig | None,
        pruner: Any,
        custom_search_space: str | None = None,
    ) -> None:
        self.sampler = sampler
        self.direction = None if direction is None else str(getattr(direction, "name", direction)).lower()
        if self.direction not in ("minimize", "maximize", None):
            raise ConfigError(f"hydra.sweeper.direction: {direction!r}; dlrun's sweeper takes minimize or maximize")
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), n_jobs, float(max_failure_rate)
        if self.n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials: must be >= 1 (finished trials to reach), got {n_trials}")
        if n_jobs is not None and int(n_jobs) < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs: must be >= 1 or null, got {n_jobs}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate: must be in [0, 1], got {max_failure_rate}")
        self.params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else params
        self.pruner = pruner_spec(OmegaConf.to_container(pruner) if isinstance(pruner, DictConfig) else pruner)
        self.custom_search_space = custom_search_space
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        """Keep the config and build the launcher (as every Hydra sweeper does)."""
        from hydra.core.plugins import Plugins

        self.config = config
        if self.direction is None:
            self.direction = search_direction(config)
        self.check(config)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def check(self, config: DictConfig) -> None:
        """Everything about the search that can be wrong, before the sweep's parent run opens."""
        import logging

        logging.getLogger("optuna").setLevel(logging.WARNING)  # "A new study created": not news on stderr
        build_pruner(self.pruner)
        search_space(self.params, [str(o) for o in config.hydra.overrides.task])
        ref = study_ref(config)
        if ref is not None:
            try:
                open_storage(ref.storage)
            except Exception as err:  # noqa: BLE001 - SQLAlchemy and Optuna raise many kinds
                from dlrun.errors import one_line

                first = one_line(str(err).split("\n")[0])[:200]
                reason = f"{type(err).__name__}: {first}"
                raise ConfigError(f"hydra.sweeper.storage: cannot open {ref.storage} ({reason})") from err

    def _sampler(self, space: SearchSpace) -> Any:
        import optuna

        if isinstance(self.sampler, functools.partial) and self.sampler.func is optuna.samplers.GridSampler:
            grid = space.grid()
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
            return self.sampler(grid)
        return self.sampler

    def open_study(self, space: SearchSpace) -> tuple[Any, StudyRef]:
        """Create or load the study (same name and storage: the same study, continued)."""
        import optuna

        assert self.config is not None
        ref = study_ref(self.config)
        assert ref is not None, "hydra.sweeper is not dlrun's Optuna sweeper"
        study = optuna.create_study(
            storage=open_storage(ref.storage),
            study_name=ref.name,
            sampler=self._sampler(space),
            pruner=build_pruner(self.pruner),
            direction=self.direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.direction:
            raise ConfigError(
                f"hydra.sweeper.direction: study {ref.name!r} in {ref.storage} was created to "
                f"{study.direction.name.lower()}; use another hydra.sweeper.study_name to {self.direction}"
            )
        study.set_user_attr(PRUNER_ATTR, self.pruner)  # trial jobs rebuild the pruner from it
        done = len(study.get_trials(deepcopy=False))
        if done and not _is_grid(study.sampler):
            study.sampler = self._continued_sampler(done) or study.sampler
        return study, ref

    def _continued_sampler(self, done: int) -> Any:
        """The configured sampler with its seed moved on by the trials the study already has (None: unseeded).

        A sampler rebuilt with the same seed would replay the draws of the earlier run (the same parameter
        sets again); seed + trials so far keeps a continued search reproducible without repeating it.
        """
        from hydra.utils import instantiate

        assert self.config is not None
        node = OmegaConf.select(self.config, "hydra.sweeper.sampler")
        if node is None or OmegaConf.select(node, "seed") is None:
            return None
        return instantiate(node, seed=int(node.seed) + done)

    def _ask(self, study: Any, space: SearchSpace) -> Any:
        trial = study.ask(fixed_distributions=space.distributions)
        trial.set_user_attr(DRIVER_ATTR, this_driver())
        if self.custom_search_space:
            from hydra.utils import get_method

            get_method(self.custom_search_space)(self.config, trial)
        return trial

    def sweep(self, arguments: list[str]) -> None:
        """Run trials until ``n_trials`` have finished; failed trials of earlier runs are run again."""
        from optuna.trial import TrialState

        assert self.config is not None and self.launcher is not None
        space = search_space(self.params, arguments)
        study, ref = self.open_study(space)
        orphans = fail_orphans(study, ORPHAN_REASON)
        if orphans:
            from dlrun.sweeping.recover import fail_trial_runs

            fail_trial_runs(self.config, ref, orphans, ORPHAN_REASON)
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        todo = max(0, self.n_trials - finished)
        batch = int(self.n_jobs or launcher_parallelism(self.config.hydra))
        failed_before = f", {len(orphans)} left running by a stopped search marked FAIL" if orphans else ""
        print(
            f"study {ref.name} ({ref.storage}): {finished} of {self.n_trials} trials finished{failed_before}; "
            f"running {todo}, {batch} at a time",
            flush=True,
        )
        launched = failures = 0
        folds = trial_folds(self.config)  # cross-validation: a trial is one job per fold, its value their mean
        while todo > 0:
            trials = [self._ask(study, space) for _ in range(max(1, min(batch // folds, todo)))]
            numbers = [t.number for t in trials]
            consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            first = numbers[0] * folds if consecutive else self.job_idx  # job number = trial number where it can be
            overrides = [trial_overrides(t.params, space.fixed) + trial_keys(ref, t.number) for t in trials]
            returns = self.launcher.launch(fold_jobs(overrides, folds), initial_job_idx=first)
            self.job_idx = first + len(returns)
            for trial, rets in zip(trials, per_trial(returns, folds), strict=True):
                outcomes = [outcome(ret) for ret in rets]
                state, value, error = fold_outcome(outcomes) if folds > 1 else outcomes[0]
                if folds > 1:
                    trial.set_user_attr(FOLD_VALUES_ATTR, [v for _, v, _ in outcomes])
                if error:
                    trial.set_user_attr(ERROR_ATTR, error[:2000])
                    failures += 1
                try:
                    study.tell(trial, value, state=state)
                except RuntimeError as err:  # the grid sampler calls study.stop() when its grid is done: fine here
                    if "Study.stop" not in str(err):
                        raise
            launched += len(trials)
            todo -= len(trials)
            if failures and failures / launched > self.max_failure_rate:
                print(
                    f"study {ref.name}: {failures} of {launched} trials failed (max_failure_rate "
                    f"{self.max_failure_rate}); stopping the search",
                    flush=True,
                )
                break
        self._save_results(study)

    def _save_results(self, study: Any) -> None:
        """``optimization_results.yaml`` in the sweep directory, as Hydra's Optuna sweeper wrote it."""
        from optuna.trial import TrialState

        assert self.config is not None
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return
        best = study.best_trial
        folder = Path(str(self.config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value, "best_trial": best.number}
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")
