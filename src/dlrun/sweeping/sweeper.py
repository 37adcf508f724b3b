"""The Optuna search loop behind ``hydra/sweeper=optuna``: ask, launch a batch of trial jobs, tell, until
``n_trials`` trials of the study have finished (COMPLETE or PRUNED), across as many runs of the command and as
many workers sharing the study as it takes.

Workers coordinate through the study alone: a worker asks only while finished + running trials are fewer
than ``n_trials``, keeps a heartbeat on the trials it runs, and marks FAIL the trials of workers whose
heartbeat stopped. Two workers asking at the same instant may both pass that check; a trial is then run
only if fewer than ``n_trials`` live trials (RUNNING, COMPLETE, PRUNED) have smaller numbers, so the study
never finishes more than ``n_trials`` (the other is told FAIL unrun, ``dlrun.unused``).

Imported only when a search starts (the Hydra plugin in ``hydra_plugins.dlrun_optuna_sweeper`` stays light).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlrun import errors
from dlrun._upstream import hydra_job_value, optuna_heartbeat
from dlrun.errors import ConfigError, RunInterrupted, UserError
from dlrun.sweeping.fold_trials import FOLD_VALUES_ATTR, fold_jobs, fold_outcome, per_trial, trial_folds
from dlrun.sweeping.outcomes import JobFailed, JobPruned
from dlrun.sweeping.pruners import build_pruner, pruner_spec
from dlrun.sweeping.space import SearchSpace, search_space, trial_overrides
from dlrun.sweeping.study import (
    ERROR_ATTR,
    PRUNER_ATTR,
    UNUSED_ATTR,
    Lease,
    StudyRef,
    fail_stale,
    open_leased,
    open_storage,
    study_ref,
)
from dlrun.sweeping.threads import launcher_parallelism


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


def check_search(config: DictConfig) -> OptunaSearch | None:
    """For dlrun's Optuna sweeper: every check of the search settings, as the sweeper will make them; the search
    (its direction settled), or None for any other sweeper.

    Hydra opens the sweep (``on_multirun_start``: the parent run) before it builds the sweeper; this lets the
    parent stay closed when the search cannot start.
    """
    node = OmegaConf.select(config, "hydra.sweeper")
    if node is None or "dlrun_optuna_sweeper" not in str(node.get("_target_", "")):
        return None
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
    return search


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
        workers: int = 1,
        heartbeat_interval: int = 10,
        grace_period: int | None = None,
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
        self.workers = int(workers)
        if self.workers < 1:
            raise ConfigError(f"hydra.sweeper.workers: must be >= 1 (search processes on this machine), got {workers}")
        if int(heartbeat_interval) < 1:
            raise ConfigError(f"hydra.sweeper.heartbeat_interval: must be >= 1 (seconds), got {heartbeat_interval}")
        grace = 2 * int(heartbeat_interval) if grace_period is None else int(grace_period)
        if grace <= int(heartbeat_interval):
            raise ConfigError(
                f"hydra.sweeper.grace_period: must be longer than heartbeat_interval ({heartbeat_interval} s), "
                f"got {grace_period}"
            )
        self.lease = Lease(int(heartbeat_interval), grace)
        self.stale: list[int] = []  # trials this process found stale and marked FAIL, not yet failed in MLflow
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
            storage=open_leased(ref.storage, self.lease, self._on_stale),
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
        if not _is_grid(study.sampler):
            study.sampler = self._trial_seeded() or study.sampler
        return study, ref

    def _trial_seeded(self) -> Any:
        """The configured sampler reseeded per trial, ``seed + trial number`` (None: unseeded).

        One seeded sampler per process would replay its draws in a rerun of the command and in every
        worker of the study (the same parameter sets again); see ``dlrun.sweeping.samplers``.
        """
        from hydra.utils import instantiate

        from dlrun.sweeping.samplers import TrialSeeded

        assert self.config is not None
        node = OmegaConf.select(self.config, "hydra.sweeper.sampler")
        if node is None or OmegaConf.select(node, "seed") is None:
            return None
        return TrialSeeded(lambda seed: instantiate(node, seed=seed), int(node.seed))

    def _on_stale(self, study: Any, trial: Any) -> None:
        """Optuna's callback for a trial this process marked FAIL because its worker's heartbeat stopped."""
        self.stale.append(trial.number)

    def _fail_stale(self, study: Any, ref: StudyRef) -> list[int]:
        """Mark FAIL (Optuna) and FAILED (MLflow) the trials whose worker stopped; their numbers."""
        fail_stale(study)
        found, self.stale = self.stale, []
        if found:
            from dlrun.sweeping.recover import fail_trial_runs

            assert self.config is not None
            fail_trial_runs(self.config, ref, found, self.stale_reason)
        return found

    @property
    def stale_reason(self) -> str:
        """The ``dlrun.error`` of a trial whose worker stopped renewing its lease."""
        return (
            f"the search process stopped during this trial (no heartbeat for {self.lease.grace} s: "
            "killed, crashed or cut off)"
        )

    def _ask(self, study: Any, space: SearchSpace) -> Any:
        trial = study.ask(fixed_distributions=space.distributions)
        if self.custom_search_space:
            from hydra.utils import get_method

            get_method(self.custom_search_space)(self.config, trial)
        return trial

    def sweep(self, arguments: list[str]) -> None:
        """Run trials until the study has ``n_trials`` finished; failed trials of earlier runs are run again."""
        from optuna.trial import TrialState

        assert self.config is not None and self.launcher is not None
        space = search_space(self.params, arguments)
        study, ref = self.open_study(space)
        stale = self._fail_stale(study, ref)
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        todo = max(0, self.n_trials - finished - running)
        batch = int(self.n_jobs or launcher_parallelism(self.config.hydra))
        failed_before = f", {len(stale)} left running by a stopped search marked FAIL" if stale else ""
        elsewhere = f", {running} running in other workers" if running else ""
        slots = f", {self.workers} workers" if self.workers > 1 else ""
        print(
            f"study {ref.name} ({ref.storage}): {finished} of {self.n_trials} trials finished{failed_before}"
            f"{elsewhere}; running {todo}, {batch} at a time{slots}",
            flush=True,
        )
        errors.received = None
        helpers = self._start_workers() if self.workers > 1 and todo > 1 else []
        from dlrun.sweeping.workers import stop_workers, wait_workers

        try:
            self._run_trials(study, ref, space, batch)
        except BaseException:
            stop_workers(helpers)  # interrupted or broken: the workers this command started stop with it
            raise
        finally:
            for line in wait_workers(helpers):
                print(f"study {ref.name}: {line}", flush=True)
        self._save_results(study)

    def _start_workers(self) -> list[Any]:
        from dlrun.sweeping import sweep_dir
        from dlrun.sweeping.threads import thread_budget
        from dlrun.sweeping.workers import start_workers

        assert self.config is not None
        folder = sweep_dir(self.config.hydra)
        workers = start_workers(self.config, self.workers, folder, thread_budget(self.config))
        print(f"started {len(workers)} more workers on this study; their output: {folder / 'workers'}", flush=True)
        return workers

    def _run_trials(self, study: Any, ref: StudyRef, space: SearchSpace, batch: int) -> None:
        """Ask, launch, tell, until the study has ``n_trials`` finished trials; wait while others run the rest."""
        from optuna.trial import TrialState

        assert self.config is not None
        launched = failures = 0
        folds = trial_folds(self.config)  # cross-validation: a trial is one job per fold, its value their mean
        waiting = False
        while True:
            if errors.received is not None:  # an interrupt whose exception a finalizer swallowed
                raise RunInterrupted(errors.received)
            self._fail_stale(study, ref)
            finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if finished >= self.n_trials:
                return
            free = self.n_trials - finished - running
            if free <= 0:  # the rest runs in other workers; one of them may stop, leaving its trial to redo
                if not waiting:
                    print(
                        f"study {ref.name}: the last {running} trials run in other workers; waiting for them "
                        f"(a trial without heartbeat for {self.lease.grace} s is failed and run again here)",
                        flush=True,
                    )
                waiting = True
                time.sleep(min(self.lease.interval, 5))
                continue
            waiting = False
            with contextlib.ExitStack() as leases:
                asked = []
                for _ in range(min(max(1, batch // folds), free)):
                    asked.append(self._ask(study, space))
                    # The lease starts with the trial: a worker stopped any later leaves a trial others can fail.
                    leases.enter_context(optuna_heartbeat(study, asked[-1]))
                trials = self._admitted(study, asked)
                if not trials:
                    continue
                failures += self._launch(study, ref, space, trials, folds)
            launched += len(trials)
            if failures and failures / launched > self.max_failure_rate:
                print(
                    f"study {ref.name}: {failures} of {launched} trials failed (max_failure_rate "
                    f"{self.max_failure_rate}); stopping the search",
                    flush=True,
                )
                return

    def _admitted(self, study: Any, trials: list[Any]) -> list[Any]:
        """The asked trials that may run: fewer than ``n_trials`` live trials have smaller numbers.

        Trial numbers are handed out by the storage, one per trial, so of two workers that asked at once
        exactly the later number steps back; the others are told FAIL unrun (``dlrun.unused``).
        """
        from optuna.trial import TrialState

        live = [t.number for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL]
        kept = []
        for trial in trials:
            if sum(n < trial.number for n in live) < self.n_trials:
                kept.append(trial)
                continue
            trial.set_user_attr(UNUSED_ATTR, f"not run: {self.n_trials} trials were already taken by other workers")
            study.tell(trial, state=TrialState.FAIL)
        return kept

    def _launch(self, study: Any, ref: StudyRef, space: SearchSpace, trials: list[Any], folds: int) -> int:
        """Run ``trials`` as one launcher batch (``folds`` jobs each under cross-validation), tell their outcomes;
        how many failed."""
        numbers = [t.number for t in trials]
        consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        first = numbers[0] * folds if consecutive else self.job_idx  # job number = trial number where it can be
        overrides = [trial_overrides(t.params, space.fixed) + trial_keys(ref, t.number) for t in trials]
        returns = self.launcher.launch(fold_jobs(overrides, folds), initial_job_idx=first)
        self.job_idx = first + len(returns)
        failures = 0
        for trial, rets in zip(trials, per_trial(returns, folds), strict=True):
            outcomes = [outcome(ret) for ret in rets]
            state, value, error = fold_outcome(outcomes) if folds > 1 else outcomes[0]
            if folds > 1:
                trial.set_user_attr(FOLD_VALUES_ATTR, [v for _, v, _ in outcomes])
            if error:
                trial.set_user_attr(ERROR_ATTR, error[:2000])
                failures += 1
            try:
                # skip_if_finished: a worker that lost its lease (suspended past the grace period) finds its
                # trial already marked FAIL by another; that record stands.
                study.tell(trial, value, state=state, skip_if_finished=True)
            except RuntimeError as err:  # the grid sampler calls study.stop() when its grid is done: fine here
                if "Study.stop" not in str(err):
                    raise
        return failures

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
