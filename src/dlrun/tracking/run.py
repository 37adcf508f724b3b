"""One MLflow run per job: start, params, tags, artifacts, and a status that matches what happened."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from dlrun.errors import RunInterrupted, TrialPruned, one_line
from dlrun.logs import is_rank_zero
from dlrun.tracking.spool import SpoolingClient, limit_http_retries, spool_folder
from dlrun.tracking.sqlite import prepare_sqlite
from dlrun.tracking.store import check_server, check_writable, get_or_create_experiment, resolve_uri

MAX_PARAM_LENGTH = 6000  # MLflow 3's limit for a param value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"hidden_sizes": [512]}}`` -> ``{"model.hidden_sizes": "[512]"}``."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


class Run(Protocol):
    """What a task writes to: an open MLflow run (``TrackedRun``) or nothing at all (``NullRun``)."""

    run_id: str | None
    experiment_id: str | None
    tracking_uri: str | None
    status: str
    offline: bool

    def log_params(self, params: Mapping[str, str]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...
    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def log_yaml(self, data: Any, name: str) -> None: ...
    def log_config(self, config: Mapping[str, Any], overrides: list[str]) -> None: ...
    def terminate(self, status: str) -> None: ...
    def mark_trained(self) -> None: ...


@dataclass(frozen=True)
class Record:
    """What a finished run looked like before a command continued it: restored if that command fails early."""

    status: str
    end_time: int | None
    tags: dict[str, str]


@dataclass
class TrackedRun:
    """An open MLflow run, written through an explicit client (no global MLflow state)."""

    client: Any
    run_id: str
    experiment_id: str
    tracking_uri: str
    status: str = field(default="RUNNING")
    earlier: Record | None = None  # a continued run's record before this command touched it
    trained: bool = False  # a training step ran in this command (the continued record has really changed)

    def mark_trained(self) -> None:
        """Training has started: from now on a failure is this run's own news, recorded as FAILED."""
        self.trained = True

    def _restore(self) -> None:
        """Put a continued run's record back as it was: status, end time and tags (a failure before any step)."""
        assert self.earlier is not None
        current = self.client.get_run(self.run_id).data.tags
        for key in current.keys() - self.earlier.tags.keys():
            self.client.delete_tag(self.run_id, key)
        changed = {k: v for k, v in self.earlier.tags.items() if current.get(k) != v}
        if changed:
            self.set_tags(changed)
        self.status = self.earlier.status
        self.client.set_terminated(self.run_id, self.earlier.status, end_time=self.earlier.end_time)

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params in MLflow's batches of at most 100."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags at once."""
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics outside Lightning (e.g. for eval runs)."""
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Upload one file (or a folder's files) under ``artifact_path``."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        """Store ``text`` as the artifact file ``name`` (may contain folders)."""
        self.client.log_text(self.run_id, text, name)

    def log_yaml(self, data: Any, name: str) -> None:
        """Store ``data`` as a YAML artifact."""
        self.log_text(yaml.safe_dump(data, sort_keys=False), name)

    def log_config(self, config: Mapping[str, Any], overrides: list[str]) -> None:
        """The job's resolved config as flattened params and ``config.yaml``, its overrides as ``overrides.yaml``."""
        self.log_params(flatten(config))
        self.log_yaml(config, "config.yaml")
        self.log_yaml(overrides, "overrides.yaml")

    def terminate(self, status: str) -> None:
        """Close the run with FINISHED, FAILED or KILLED (spooled, with what came before, while the server is away)."""
        self.status = status
        self.client.set_terminated(self.run_id, status)
        close = getattr(self.client, "close", None)  # a SpoolingClient: send what is spooled, or say where it is
        if close is not None:
            close()

    @property
    def offline(self) -> bool:
        """True while the tracking server cannot be reached and this run's records go to its spool."""
        return bool(getattr(self.client, "offline", False))


class NullRun:
    """Stands in for a run when tracking is off or on non-zero DDP ranks: ``TrackedRun``'s methods, doing nothing.

    Exactly ``TrackedRun``'s public methods (a test compares them), so a misspelled call fails here too.
    """

    run_id = None
    experiment_id = None
    tracking_uri = None
    status = "RUNNING"
    offline = False

    def log_params(self, params: Mapping[str, str]) -> None:
        """Nothing to log."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Nothing to tag."""

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Nothing to log."""

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Nothing to upload."""

    def log_text(self, text: str, name: str) -> None:
        """Nothing to store."""

    def log_yaml(self, data: Any, name: str) -> None:
        """Nothing to store."""

    def log_config(self, config: Mapping[str, Any], overrides: list[str]) -> None:
        """Nothing to record."""

    def terminate(self, status: str) -> None:
        """Keeps the status, as ``TrackedRun`` does."""
        self.status = status

    def mark_trained(self) -> None:
        """Nothing to remember."""


@dataclass
class RunSpec:
    """What the job tells the store about a new (or resumed) run."""

    uri: str | None
    experiment: str
    run_name: str
    tags: dict[str, str]
    cwd: Path
    resume_run_id: str | None = None
    system_metrics: bool = False  # tracking.system_metrics: MLflow's CPU/memory/disk/network (and GPU) metrics


@contextmanager
def tracked_run(spec: RunSpec | None) -> Iterator[Run]:
    """Open a run; on exit mark it FINISHED, FAILED (with the error as tag ``dlrun.error``) or KILLED."""
    if spec is None or not is_rank_zero():
        yield NullRun()
        return
    from mlflow.tracking import MlflowClient

    if spec.system_metrics:
        check_system_metrics()
    uri, artifact_root = resolve_uri(spec.uri, spec.cwd)
    remote = uri.startswith(("http://", "https://"))
    if remote:
        limit_http_retries()  # a few quick retries, then the run's spool (see tracking.spool)
    check_server(uri)
    check_writable(uri)  # a read-only store fails here, in one line, not in MLflow's first write
    prepare_sqlite(uri)  # parallel jobs on a new SQLite file must not all create its tables at once
    client = MlflowClient(tracking_uri=uri)
    if spec.resume_run_id:
        from dlrun.tracking.run_ids import resolve_run_id

        found = client.get_run(resolve_run_id(client, spec.resume_run_id, "resume"))
        info = found.info
        earlier = Record(info.status, info.end_time, dict(found.data.tags)) if info.status != "RUNNING" else None
        client.update_run(info.run_id, status="RUNNING")
        run = TrackedRun(client, info.run_id, info.experiment_id, uri, earlier=earlier)
    else:
        experiment_id = get_or_create_experiment(client, spec.experiment, artifact_root)
        created = client.create_run(experiment_id, run_name=spec.run_name, tags=spec.tags)
        run = TrackedRun(client, created.info.run_id, experiment_id, uri)
    if remote:  # writes go to the run folder's spool while the server is away
        folder = spool_folder(Path(spec.tags.get("dlrun.output_dir") or spec.cwd))
        run.client = SpoolingClient(client, uri, folder, run.run_id)
    monitor = start_system_metrics(run, resumed=bool(spec.resume_run_id)) if spec.system_metrics else None
    try:
        yield run
    except (KeyboardInterrupt, RunInterrupted):
        _stop(monitor)
        if run.earlier is not None and not run.trained:
            run._restore()
        else:
            run.terminate("KILLED")
        raise
    except TrialPruned as err:  # a search's pruner stopped it: an outcome, not a failure
        _stop(monitor)
        try:
            run.set_tags({"dlrun.pruned": err.epoch})
        finally:
            run.terminate("KILLED")
        raise
    except BaseException as err:
        _stop(monitor)
        if run.earlier is not None and not run.trained:  # a continued run that failed before any step: unchanged
            run._restore()
            raise
        message = one_line(str(err)) or type(err).__name__
        try:
            run.set_tags({"dlrun.error": f"{type(err).__name__}: {message}"[:5000]})
        finally:
            run.terminate("FAILED")
        raise
    else:
        _stop(monitor)
        run.terminate("FINISHED")


def check_system_metrics() -> None:
    """Fail before the run starts when MLflow's system metrics cannot be collected here."""
    import importlib.util

    from dlrun.errors import ConfigError

    if importlib.util.find_spec("psutil") is None:
        raise ConfigError("tracking.system_metrics: needs the psutil package (pip install psutil)")


def start_system_metrics(run: TrackedRun, resumed: bool = False) -> Any:
    """Start MLflow's system-metrics thread for the run (``system/*`` metrics every 10 s; GPU ones with pynvml)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL / _SAMPLES_BEFORE_LOGGING still override these defaults.
    monitor = SystemMetricsMonitor(run.run_id, resume_logging=resumed, tracking_uri=run.tracking_uri)
    monitor.start()
    return monitor


def _stop(monitor: Any) -> None:
    """Stop the system-metrics thread and flush its last samples before the run is closed."""
    if monitor is not None:
        monitor.finish()
