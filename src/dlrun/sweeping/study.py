"""Where an Optuna study lives (storage URL and name), opening it, and the leases by which workers hold trials.

The study is persistent by default: ``optuna.db`` (SQLite) beside the MLflow store's SQLite file, else in
the working directory. ``hydra.sweeper.storage`` may name any Optuna storage URL instead, or
``journal:///ABS/PATH`` (``journal://REL/PATH``) for Optuna's journal file, the choice for clusters whose
nodes share a file system but where SQLite's locking is unreliable (NFS). Any number of search processes
(workers, on any hosts) may share one study: a worker renews a heartbeat on the trials it runs, and whoever
finds a trial whose heartbeat stopped marks it FAIL (``fail_stale``).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import ConfigError, UserError

DEFAULT_FILE = "optuna.db"
JOURNAL = "journal://"
# Trial user attributes dlrun keeps (visible in `optuna-dashboard` and `study.trials_dataframe()`).
RUN_ATTR = "mlflow_run_id"  # the trial's MLflow run
ERROR_ATTR = "dlrun.error"  # why a trial FAILED
PRUNER_ATTR = "dlrun.pruner"  # study attribute: the pruner's name and settings, rebuilt by each trial job
UNUSED_ATTR = "dlrun.unused"  # a trial told FAIL without running: other workers had already taken n_trials
PARENT_ATTR = "dlrun.parent_run_id"  # study attribute: the search's MLflow parent run, shared by all its workers
# Config keys the sweeper adds to each trial job (as `+trial.KEY=...` overrides): how a job finds its trial.
TRIAL_KEYS = ("study", "storage", "number")


@dataclass(frozen=True)
class StudyRef:
    """One study: its storage URL (absolute) and name."""

    storage: str
    name: str

    @property
    def key(self) -> str:
        """``NAME@STORAGE``: the MLflow tag ``dlrun.study`` that finds the search's parent run and trial runs."""
        return f"{self.name}@{self.storage}"


def storage_url(storage: str | None, tracking_uri: str | None, cwd: Path) -> str:
    """The absolute storage URL: ``storage`` made absolute, or ``optuna.db`` beside MLflow's SQLite file (or in cwd)."""
    if not storage:
        folder = cwd
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            folder = (db if db.is_absolute() else cwd / db).parent
        return f"sqlite:///{folder / DEFAULT_FILE}"
    storage = str(storage)
    for prefix in (JOURNAL, "sqlite:///"):
        if storage.startswith(prefix):
            path = Path(storage.removeprefix(prefix))
            return f"{prefix}{path if path.is_absolute() else cwd / path}"
    if "://" not in storage:
        raise ConfigError(
            f"hydra.sweeper.storage: {storage!r} is not a storage URL; use sqlite:///PATH.db, "
            "journal:///PATH.log, or a database URL (postgresql://..., mysql://...)"
        )
    return storage


def study_name(name: str | None, choices: Mapping[str, Any]) -> str:
    """The study's name: ``hydra.sweeper.study_name``, else the ``hparams_search`` preset, else the experiment."""
    return str(name or choices.get("hparams_search") or choices.get("experiment") or "dlrun")


def study_ref(config: Any) -> StudyRef | None:
    """The study of a multirun config whose sweeper is dlrun's Optuna sweeper; None for any other sweeper."""
    from omegaconf import OmegaConf

    sweeper = OmegaConf.select(config, "hydra.sweeper")
    if sweeper is None or not str(sweeper.get("_target_", "")).startswith("hydra_plugins.dlrun_optuna_sweeper"):
        return None
    cwd = Path(str(config.hydra.runtime.cwd))
    tracking_uri = OmegaConf.select(config, "tracking.uri") if OmegaConf.select(config, "tracking.enabled") else None
    choices = dict(config.hydra.runtime.choices)
    return StudyRef(
        storage_url(sweeper.get("storage"), tracking_uri, cwd), study_name(sweeper.get("study_name"), choices)
    )


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: journal file, SQLite (waiting up to 60 s for other writers), or any URL."""
    import optuna

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return rdb_storage(url)


def rdb_storage(url: str, **kwargs: Any) -> Any:
    """``optuna.storages.RDBStorage(url, **kwargs)``, made while other workers may be making it too.

    Workers started together on a new database all create Optuna's tables; the losers of that race get an
    IntegrityError (a version row already there) and simply open the tables the winner made.
    """
    import random

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Parallel trial jobs report intermediate values into the same file: wait for the lock, don't fail.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, OperationalError):
            if attempt == 4:
                raise
            time.sleep(0.2 + random.random())  # noqa: S311 - spreading retries, not security
    raise AssertionError("unreachable")


def load_study(ref: StudyRef, pruner: Any = None) -> Any:
    """The existing study ``ref`` (with ``pruner`` for ``should_prune``)."""
    import optuna

    try:
        return optuna.load_study(study_name=ref.name, storage=open_storage(ref.storage), pruner=pruner)
    except KeyError as err:
        raise UserError(f"trial.study: no study {ref.name!r} in {ref.storage}") from err


def shared_parent(
    ref: StudyRef, direction: str, find: Callable[[], str | None], create: Callable[[], str], wait: float = 60.0
) -> tuple[str, bool]:
    """The study's one MLflow parent run, whichever worker starts first: (run id, True if made here).

    Creating the study is the race's referee (a storage refuses a second study of the same name): its
    creator makes the parent (``create``) and names it on the study (``dlrun.parent_run_id``); every other
    worker waits for that name. A study from before dlrun named parents there takes ``find()`` or a new one.
    """
    import optuna

    storage = open_storage(ref.storage)
    try:
        study = optuna.create_study(storage=storage, study_name=ref.name, direction=direction)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=ref.name, storage=storage)
    else:
        run_id = create()
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id, True
    deadline = time.monotonic() + wait
    # A new study's creator names the parent within moments; one with trials and no name predates the attribute.
    while not study.user_attrs.get(PARENT_ATTR) and not study.trials and time.monotonic() < deadline:
        time.sleep(0.2)
    if study.user_attrs.get(PARENT_ATTR):
        return str(study.user_attrs[PARENT_ATTR]), False
    found = find()
    run_id = found or create()
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id, found is None


# ---- leases: a trial is owned by the worker that renews its heartbeat, wherever that worker runs


@dataclass(frozen=True)
class Lease:
    """How a worker holds its trials: a heartbeat every ``interval`` s; a trial silent for ``grace`` s is stale."""

    interval: int
    grace: int


def open_leased(url: str, lease: Lease, on_stale: Callable[[Any, Any], None] | None = None) -> Any:
    """``open_storage(url)`` with heartbeats (``fail_stale_trials`` then finds trials whose worker stopped).

    RDB storages (SQLite, PostgreSQL, MySQL) keep Optuna's own heartbeat table, timed by the database;
    Optuna's journal storage has no heartbeat, so a journal file gets ``JournalLeases`` (a timestamp per
    trial, written into the journal: the hosts sharing it need synchronized clocks, NTP).
    ``on_stale(study, frozen_trial)`` runs in the process that marked a stale trial FAIL.
    """
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if url.startswith(JOURNAL):
        path = Path(url.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return journal_leases()(path, lease, on_stale)
    return rdb_storage(
        url, heartbeat_interval=lease.interval, grace_period=lease.grace, heartbeat_stale_trial_callback=on_stale
    )


HEARTBEAT_ATTR = "dlrun:heartbeat"  # a journal trial's system attribute: the time of its worker's last heartbeat


@functools.cache
def journal_leases() -> type:
    """``JournalLeases``: Optuna's journal-file storage with the heartbeat interface its RDB storage has."""
    import time

    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from dlrun._upstream import optuna_heartbeat_base

    class JournalLeases(optuna.storages.JournalStorage, optuna_heartbeat_base()):
        """A journal file whose RUNNING trials carry their worker's last heartbeat (``dlrun:heartbeat``)."""

        def __init__(self, path: Path, lease: Lease, on_stale: Callable[[Any, Any], None] | None) -> None:
            super().__init__(JournalFileBackend(str(path)))
            self.lease, self.on_stale = lease, on_stale

        def record_heartbeat(self, trial_id: int) -> None:
            """Renew the lease of a RUNNING trial (a trial already finished, by anyone, is left alone)."""
            try:
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                pass

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            return [
                self.get_trial_id_from_study_id_trial_number(study_id, t.number)
                for t in running
                if now - float(t.system_attrs.get(HEARTBEAT_ATTR, now)) > self.lease.grace
            ]

        def get_heartbeat_interval(self) -> int | None:
            return self.lease.interval

        def get_heartbeat_stale_trial_callback(self) -> Callable[[Any, Any], None] | None:
            return self.on_stale

    return JournalLeases


def fail_stale(study: Any) -> None:
    """Mark FAIL the RUNNING trials whose worker stopped renewing its lease (the storage's ``on_stale`` hears)."""
    import optuna

    optuna.storages.fail_stale_trials(study)
