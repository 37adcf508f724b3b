"""Reading a local SQLite MLflow store directly, read-only, with plain ``sqlite3``.

Why not MlflowClient: on this machine ``import mlflow`` alone takes 1.0 s and opening its SQLAlchemy
store another 0.5 s, so a listing through MLflow cannot meet the 1.5 s budget of ``dlrun runs``
(bench/runs_startup.py measures both). The few tables read here (experiments, runs, params, tags,
latest_metrics, metrics) are MLflow's core schema, stable since MLflow 1.x; tests compare this reader
with ``ClientReader`` on the same real store. Filter strings, servers and artifacts go through MLflow.
"""

from __future__ import annotations

import math
import sqlite3
import urllib.parse
from collections.abc import Iterator
from typing import Any

from dlrun.browse.records import RunRecord
from dlrun.errors import UserError
from dlrun.tracking.run_ids import MIN_PREFIX, RUN_ID, RUN_ID_PREFIX, AmbiguousRunId, RunNotFound

CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
MODEL_STATUS = {1: "PENDING", 2: "READY", 3: "FAILED"}  # MLflow's LoggedModelStatus numbers in the store


class SqliteReader:
    """A Reader over ``sqlite:///PATH`` that never writes (the file is opened with ``mode=ro``)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        path = uri.removeprefix("sqlite:///")
        self.db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            raise UserError(f"--tracking-uri {uri}: {path} is not an SQLite database ({err})") from err
        if not {"runs", "experiments"} <= tables:
            raise UserError(f"--tracking-uri {uri}: {path} is an SQLite file but not an MLflow store (no runs table)")
        self._client: Any = None
        self._names: dict[str, str] | None = None
        self._tables = tables

    def experiments(self) -> dict[str, str]:
        """Active experiments: id -> name."""
        if self._names is None:
            rows = self.db.execute("SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'")
            self._names = {str(i): name for i, name in rows}
        return self._names

    def runs(self, experiment_ids: list[str], filter_string: str | None = None) -> list[RunRecord]:
        """Active runs of these experiments, newest first, with params, tags and latest metrics."""
        if filter_string:
            raise ValueError("filter strings need MLflow's parser: use ClientReader")
        names = self.experiments()
        records: list[RunRecord] = []
        for ids in _chunks([int(i) for i in experiment_ids]):
            rows = self.db.execute(
                "SELECT run_uuid, name, experiment_id, status, start_time, end_time, artifact_uri FROM runs "
                f"WHERE lifecycle_stage = 'active' AND experiment_id IN ({_marks(ids)})",
                ids,
            )
            records += [
                RunRecord(r[0], r[1] or "", str(r[2]), r[3], r[4], r[5], r[6] or "", names.get(str(r[2]), ""))
                for r in rows
            ]
        records.sort(key=lambda r: (-(r.start_ms or 0), r.run_id))  # MLflow's own order
        self._fill(records)
        return records

    def _fill(self, records: list[RunRecord]) -> None:
        by_id = {r.run_id: r for r in records}
        for ids in _chunks(list(by_id)):
            where = f"run_uuid IN ({_marks(ids)})"
            for run_id, key, value in self.db.execute(f'SELECT run_uuid, "key", value FROM params WHERE {where}', ids):
                by_id[run_id].params[key] = value
            for run_id, key, value in self.db.execute(f'SELECT run_uuid, "key", value FROM tags WHERE {where}', ids):
                by_id[run_id].tags[key] = value
            query = f'SELECT run_uuid, "key", value, is_nan FROM latest_metrics WHERE {where}'
            for run_id, key, value, is_nan in self.db.execute(query, ids):
                by_id[run_id].metrics[key] = math.nan if is_nan else float(value)

    def extremes(self, run_ids: list[str], key: str) -> dict[str, tuple[float, float]]:
        """(min, max) of metric ``key`` over each run's whole history (NaN values left out)."""
        found: dict[str, tuple[float, float]] = {}
        for ids in _chunks(run_ids):
            rows = self.db.execute(
                f'SELECT run_uuid, MIN(value), MAX(value) FROM metrics WHERE "key" = ? AND is_nan = 0 '
                f"AND run_uuid IN ({_marks(ids)}) GROUP BY run_uuid",
                [key, *ids],
            )
            found.update({run_id: (float(lo), float(hi)) for run_id, lo, hi in rows})
        return found

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of metric ``key``, in step order."""
        rows = self.db.execute(
            'SELECT step, value, is_nan FROM metrics WHERE run_uuid = ? AND "key" = ? ORDER BY step, timestamp',
            [run_id, key],
        )
        return [(int(step), math.nan if is_nan else float(value)) for step, value, is_nan in rows]

    def resolve(self, ref: str, key: str = "run") -> str:
        """The full id of the active run ``ref`` names (a full id or a unique prefix of 8+ digits)."""
        if not RUN_ID_PREFIX.match(ref):
            raise RunNotFound(f"{key}={ref}: not a run id (at least {MIN_PREFIX} of its 32 hex digits)")
        rows = self.db.execute(
            "SELECT run_uuid FROM runs WHERE lifecycle_stage = 'active' AND substr(run_uuid, 1, ?) = ? LIMIT 10",
            [len(ref), ref],
        ).fetchall()
        matches = sorted(r[0] for r in rows)
        if not matches:
            full = "with this id" if RUN_ID.match(ref) else f"id starts with {ref}"
            raise RunNotFound(f"{key}={ref}: no MLflow run {full} in {self.uri}")
        if len(matches) > 1:
            shown = ", ".join(matches[:4])
            raise AmbiguousRunId(f"{key}={ref}: {len(matches)} runs start with {ref} ({shown}); give more digits")
        return matches[0]

    def run(self, run_id: str) -> RunRecord:
        """One run by full id."""
        row = self.db.execute(
            "SELECT run_uuid, name, experiment_id, status, start_time, end_time, artifact_uri FROM runs "
            "WHERE run_uuid = ?",
            [run_id],
        ).fetchone()
        if row is None:
            raise RunNotFound(f"run={run_id}: no MLflow run with this id in {self.uri}")
        record = RunRecord(row[0], row[1] or "", str(row[2]), row[3], row[4], row[5], row[6] or "")
        record.experiment = self.experiments().get(record.experiment_id, "")
        self._fill([record])
        return record

    def datasets(self, run_id: str) -> list[dict[str, str]]:
        """The run's dataset inputs: name, digest, source, context (MLflow's ``mlflow.data.context`` tag)."""
        rows = self.db.execute(
            "SELECT d.name, d.digest, d.dataset_source, t.value FROM inputs i "
            "JOIN datasets d ON d.dataset_uuid = i.source_id "
            "LEFT JOIN input_tags t ON t.input_uuid = i.input_uuid AND t.name = 'mlflow.data.context' "
            "WHERE i.destination_id = ? AND i.source_type = 'DATASET' ORDER BY t.value",
            [run_id],
        )
        return [{"name": n, "digest": d, "source": s, "context": c or ""} for n, d, s, c in rows]

    def logged_models(self, run_id: str) -> list[dict[str, str]]:
        """Models the run logged (MLflow 3's logged models): name, model id, artifact location, status."""
        if "logged_models" not in self._tables:  # a store made before MLflow 3
            return []
        rows = self.db.execute(
            "SELECT name, model_id, artifact_location, status FROM logged_models "
            "WHERE source_run_id = ? AND lifecycle_stage = 'active' ORDER BY creation_timestamp_ms",
            [run_id],
        )
        return [
            {"name": name, "model_id": model, "location": where, "status": MODEL_STATUS.get(status, str(status))}
            for name, model, where, status in rows
        ]

    def client(self) -> Any:
        """An MlflowClient on the same store, made on first use (it costs MLflow's import)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _marks(items: list[Any]) -> str:
    return ",".join("?" * len(items))
