"""Which store the browse commands read, resolved as training resolves ``tracking.uri``, and its reader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from dlrun.browse.records import RunRecord
from dlrun.errors import UserError


class EmptyStore(UserError):
    """No MLflow store (or no runs) where the command looked."""


class Reader(Protocol):
    """What the browse commands read from a store; ``sqlite_reader`` and ``client_reader`` implement it."""

    uri: str

    def experiments(self) -> dict[str, str]:
        """Active experiments: id -> name."""

    def runs(self, experiment_ids: list[str], filter_string: str | None = None) -> list[RunRecord]:
        """Active runs of these experiments, newest first, with params, tags and latest metrics."""

    def extremes(self, run_ids: list[str], key: str) -> dict[str, tuple[float, float]]:
        """(min, max) of metric ``key`` over each run's whole history."""

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of metric ``key``, in step order."""

    def resolve(self, ref: str, key: str = "run") -> str:
        """The full id of the run ``ref`` names (a full id or a unique prefix of 8+ digits)."""

    def run(self, run_id: str) -> RunRecord:
        """One run by full id."""

    def datasets(self, run_id: str) -> list[dict[str, str]]:
        """The run's dataset inputs: name, digest, source, context."""

    def logged_models(self, run_id: str) -> list[dict[str, str]]:
        """Models the run logged: name, model id, artifact location, status."""

    def client(self) -> Any:
        """An MlflowClient on the same store (artifacts of remote stores)."""


def tracking_uri(arg: str | None, cwd: Path) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``; checked to exist."""
    from dlrun.tracking.store import check_server, resolve_uri

    uri = arg or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{cwd / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else cwd / path
        if not path.is_file():  # reading must not create an empty store as a side effect
            raise EmptyStore(
                f"tracking.uri: no MLflow store at {path} (no runs in this folder yet; "
                "pass --tracking-uri or set MLFLOW_TRACKING_URI)"
            )
    resolved, _ = resolve_uri(uri, cwd)
    check_server(resolved)
    return resolved


def open_reader(arg: str | None, cwd: Path, need_filter: bool = False) -> Reader:
    """The fast SQLite reader for a local store, MLflow's client otherwise (servers, MLflow filter strings)."""
    uri = tracking_uri(arg, cwd)
    if uri.startswith("sqlite:///") and not need_filter:
        from dlrun.browse.sqlite_reader import SqliteReader

        return SqliteReader(uri)
    from dlrun.browse.client_reader import ClientReader

    return ClientReader(uri)
