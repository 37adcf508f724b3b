"""SQLite stores shared by concurrent jobs: create the tables once, under a lock.

MLflow creates a new store's tables when it first opens it. Four parallel jobs opening the same new
file all run those migrations at once and crash ("duplicate column name", "table already exists",
alembic's "expected to match one row"). Once the tables exist, concurrent writers are safe: MLflow
sets a 20 s ``busy_timeout`` on every session and pysqlite opens write transactions only at the
first write, so writers queue instead of failing with "database is locked".
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; parallel jobs there need an already initialized store
    fcntl = None  # type: ignore[assignment]

_ready: set[str] = set()


def prepare_sqlite(uri: str) -> None:
    """Make sure the SQLite store at ``uri`` has its tables, creating them while holding a file lock."""
    if not uri.startswith("sqlite:///") or uri in _ready:
        return
    path = Path(uri.removeprefix("sqlite:///"))
    # Even when the tables seem to exist, wait for the lock: MLflow stamps alembic_version early in its
    # migrations, so a job that saw the stamp without waiting opened the store mid-migration and crashed
    # ("table sql_trace_metric_daily_rollups already exists").
    if not has_tables(path) or fcntl is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.touch()  # SQLite treats an empty file as a new database; flock needs a file
        except OSError as err:
            from dlrun.errors import ConfigError

            raise ConfigError(
                f"tracking.uri: cannot create the SQLite store {path} ({err.strerror or type(err).__name__})"
            ) from err
        with open(path, "rb") as handle:
            if fcntl is not None:
                # flock and SQLite's own fcntl byte-range locks are independent on Linux: no interference.
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if not has_tables(path):
                    from mlflow.tracking import MlflowClient

                    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates the tables
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)
    _ready.add(uri)


def has_tables(path: Path) -> bool:
    """True when the file holds an MLflow schema (its ``alembic_version`` table has a revision)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:
        return False
