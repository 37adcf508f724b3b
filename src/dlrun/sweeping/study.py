"""Where an Optuna study lives (storage URL and name), opening it, and telling which of its trials were orphaned.

The study is persistent by default: ``optuna.db`` (SQLite) beside the MLflow store's SQLite file, else in
the working directory. ``hydra.sweeper.storage`` may name any Optuna storage URL instead, or
``journal:///ABS/PATH`` (``journal://REL/PATH``) for Optuna's journal file, the choice for clusters whose
nodes share a file system but where SQLite's locking is unreliable (NFS).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun._upstream import optuna_trial
from dlrun.errors import ConfigError, UserError

DEFAULT_FILE = "optuna.db"
JOURNAL = "journal://"
# Trial user attributes dlrun keeps (visible in `optuna-dashboard` and `study.trials_dataframe()`).
DRIVER_ATTR = "dlrun.driver"  # host:pid:start of the search process that launched the trial
RUN_ATTR = "mlflow_run_id"  # the trial's MLflow run
ERROR_ATTR = "dlrun.error"  # why a trial FAILED
PRUNER_ATTR = "dlrun.pruner"  # study attribute: the pruner's name and settings, rebuilt by each trial job
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
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Parallel trial jobs report intermediate values into the same file: wait for the lock, don't fail.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def load_study(ref: StudyRef, pruner: Any = None) -> Any:
    """The existing study ``ref`` (with ``pruner`` for ``should_prune``)."""
    import optuna

    try:
        return optuna.load_study(study_name=ref.name, storage=open_storage(ref.storage), pruner=pruner)
    except KeyError as err:
        raise UserError(f"trial.study: no study {ref.name!r} in {ref.storage}") from err


# ---- the search process that launched a trial, and whether it is still alive


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so that a reused pid is not mistaken for it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_driver() -> str:
    """``host:pid:start`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def driver_alive(driver: str) -> bool:
    """True when ``driver`` (``host:pid:start``) is a live process on this host; False when it is gone.

    A driver on another host cannot be checked: dlrun takes one search command per study at a time,
    so it is taken for gone.
    """
    host, _, rest = driver.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _start_time(int(pid_text)) == start


def live_driver(ref: StudyRef) -> str | None:
    """``host:pid:start`` of a live search process with a trial RUNNING in study ``ref``; None if there is none."""
    for prefix in ("sqlite:///", JOURNAL):
        if ref.storage.startswith(prefix) and not Path(ref.storage.removeprefix(prefix)).is_file():
            return None  # no study yet: nothing can be running in it
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=ref.name, storage=open_storage(ref.storage))
    except KeyError:
        return None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = str(trial.user_attrs.get(DRIVER_ATTR, ""))
        if driver and driver_alive(driver):
            return driver
    return None


def orphaned_trials(study: Any) -> list[Any]:
    """RUNNING trials whose search process is gone (killed, crashed); refuses if a live one still runs trials."""
    from optuna.trial import TrialState

    orphans = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = str(trial.user_attrs.get(DRIVER_ATTR, ""))
        if driver and driver_alive(driver):
            pid = driver.split(":")[1]
            raise UserError(
                f"hydra.sweeper.study_name: study {study.study_name!r} is being searched by process {pid} on this "
                f"host (trial {trial.number} is running); wait for it or stop it, then run this command again"
            )
        orphans.append(trial)
    return orphans


def fail_orphans(study: Any, reason: str) -> list[int]:
    """Mark the orphaned RUNNING trials FAIL (user attr ``dlrun.error``); their numbers."""
    from optuna.trial import TrialState

    numbers = []
    for trial in orphaned_trials(study):
        optuna_trial(study, trial).set_user_attr(ERROR_ATTR, reason)
        study.tell(trial.number, state=TrialState.FAIL)
        numbers.append(trial.number)
    return numbers
