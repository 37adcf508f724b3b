"""Reading any MLflow store through MlflowClient: tracking servers, and MLflow's filter strings."""

from __future__ import annotations

import math
from typing import Any

from dlrun.browse.records import RunRecord
from dlrun.errors import UserError

PAGE = 5000


class ClientReader:
    """A Reader over MLflow's own client (slower to start than SqliteReader: it imports MLflow)."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self._client = MlflowClient(tracking_uri=uri)
        self._names: dict[str, str] | None = None

    def experiments(self) -> dict[str, str]:
        """Active experiments: id -> name."""
        if self._names is None:
            self._names = {e.experiment_id: e.name for e in self._client.search_experiments()}
        return self._names

    def runs(self, experiment_ids: list[str], filter_string: str | None = None) -> list[RunRecord]:
        """Active runs of these experiments matching MLflow's ``filter_string``, newest first."""
        from mlflow.exceptions import MlflowException

        if not experiment_ids:
            return []
        records: list[RunRecord] = []
        token = None
        while True:
            try:
                page = self._client.search_runs(
                    experiment_ids,
                    filter_string or "",
                    max_results=PAGE,
                    page_token=token,
                    order_by=["attributes.start_time DESC"],
                )
            except MlflowException as err:
                message = " ".join(str(err.message if hasattr(err, "message") else err).split())
                raise UserError(f"--filter {filter_string!r}: {message}") from err
            records += [self.record(run) for run in page]
            token = page.token
            if not token:
                return records

    def record(self, run: Any) -> RunRecord:
        """An MLflow ``Run`` as a RunRecord."""
        info = run.info
        return RunRecord(
            info.run_id,
            info.run_name or "",
            info.experiment_id,
            info.status,
            info.start_time,
            info.end_time,
            info.artifact_uri or "",
            self.experiments().get(info.experiment_id, ""),
            dict(run.data.params),
            dict(run.data.tags),
            dict(run.data.metrics),
        )

    def extremes(self, run_ids: list[str], key: str) -> dict[str, tuple[float, float]]:
        """(min, max) of metric ``key`` over each run's whole history (NaN values left out)."""
        found = {}
        for run_id in run_ids:
            values = [v for _, v in self.history(run_id, key) if not math.isnan(v)]
            if values:
                found[run_id] = (min(values), max(values))
        return found

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of metric ``key``, in step order."""
        points = self._client.get_metric_history(run_id, key)
        return [(m.step, m.value) for m in sorted(points, key=lambda m: (m.step, m.timestamp))]

    def resolve(self, ref: str, key: str = "run") -> str:
        """The full id of the run ``ref`` names (a full id or a unique prefix of 8+ digits)."""
        from dlrun.tracking.artifacts import get_run

        return get_run(self._client, ref, key).info.run_id

    def run(self, run_id: str) -> RunRecord:
        """One run by full id."""
        from dlrun.tracking.artifacts import get_run

        return self.record(get_run(self._client, run_id, "run"))

    def datasets(self, run_id: str) -> list[dict[str, str]]:
        """The run's dataset inputs: name, digest, source, context (MLflow's ``mlflow.data.context`` tag)."""
        found = []
        for item in self._client.get_run(run_id).inputs.dataset_inputs:
            context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
            ds = item.dataset
            found.append({"name": ds.name, "digest": ds.digest, "source": ds.source, "context": context})
        return sorted(found, key=lambda d: d["context"])

    def logged_models(self, run_id: str) -> list[dict[str, str]]:
        """Models the run logged (MLflow 3's logged models): name, model id, artifact location, status."""
        run = self._client.get_run(run_id)
        found = self._client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        return [
            {"name": m.name, "model_id": m.model_id, "location": m.artifact_location, "status": str(m.status)}
            for m in sorted(found, key=lambda m: m.creation_timestamp)
        ]

    def client(self) -> Any:
        """The MlflowClient itself."""
        return self._client
