"""Where runs are kept: resolving the tracking URI, artifact root and experiment."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from dlrun.errors import ConfigError, UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def resolve_uri(uri: str | None, cwd: Path) -> tuple[str, str | None]:
    """Return an absolute tracking URI and the artifact root for new experiments (None: the server's)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{cwd / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_absolute():
            path = cwd / path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"tracking.uri: cannot create the folder of the SQLite store {path} ({_reason(err)})"
            ) from err
        return f"sqlite:///{path}", (path.parent / "mlartifacts").as_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return uri.rstrip("/"), None
    raise ConfigError(
        f"tracking.uri: {uri!r} is not supported; use sqlite:///ABS/PATH.db or http(s)://HOST:PORT "
        "(MLflow 3 refuses the old ./mlruns file store)"
    )


def check_writable(uri: str) -> None:
    """Fail before a run opens when a SQLite store (or its folder, for SQLite's journal) cannot be written.

    MLflow would otherwise log its own ERROR with tracebacks and raise a many-line database error at the
    first write. ``os.access`` sees read-only file systems too (EROFS), not only permissions.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    for place in (path.parent, path):
        if place.exists() and not os.access(place, os.W_OK):
            what = "folder of the SQLite store" if place == path.parent else "SQLite store"
            raise ConfigError(f"tracking.uri: the {what} {place} is not writable ({_read_only_reason(place)})")


def _read_only_reason(place: Path) -> str:
    try:
        read_only_fs = bool(os.statvfs(place).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only_fs = False
    return "read-only file system" if read_only_fs else "permission denied"


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as response:
            if response.status != 200:
                raise UserError(f"tracking.uri: MLflow server at {uri} answered HTTP {response.status} on /health")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"tracking.uri: cannot reach MLflow server at {uri} ({reason})") from err
    check_login(uri, timeout)


def check_login(uri: str, timeout: float = 5.0) -> None:
    """Fail before a run opens when the server refuses this client: a wrong or missing login (401), no permission
    or a Host header it does not accept (403). ``/health`` answers everyone, so ask for one experiment."""
    import base64

    # MLFLOW_TRACKING_USERNAME/PASSWORD, else ~/.mlflow/credentials: what MLflow itself sends
    from mlflow.utils.credentials import read_mlflow_creds

    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1")
    creds = read_mlflow_creds()
    if creds.username and creds.password:
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as err:
        if err.code not in (401, 403):
            return  # the server answers; what it thinks of the request is for MLflow's own calls to say
        code, body = err.code, " ".join(err.read(300).decode("utf-8", "replace").split())
    except (urllib.error.URLError, OSError):
        return  # reachable a moment ago: a network hiccup is for MLflow's retries
    if code == 401:
        who = f"user {creds.username!r}" if creds.username else "no login"
        raise UserError(
            f"tracking.uri: MLflow server at {uri} refused {who} (HTTP 401: wrong or missing login; set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
        )
    raise UserError(f"tracking.uri: MLflow server at {uri} refused this client (HTTP 403: {body[:200]})")


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """Experiment id for ``name``, created (with ``artifact_root/<name>``) if new; safe under concurrent jobs."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = f"{artifact_root}/{name}" if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another job created it between our lookup and our create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
