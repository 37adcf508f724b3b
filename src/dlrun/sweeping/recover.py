"""MLflow's side of a search that was stopped: the runs of trials it left RUNNING are marked FAILED."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dlrun.sweeping.study import StudyRef

STUDY_TAG = "dlrun.study"  # on the search's parent run and on every trial's run: ``StudyRef.key``
TRIAL_TAG = "dlrun.trial"  # on a trial's run: the trial number


def trial_runs(client: Any, ref: StudyRef, status: str | None = None) -> list[Any]:
    """The MLflow runs of the study's trials (optionally only those with ``status``), in every experiment."""
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    query = f"tags.`{STUDY_TAG}` = '{ref.key}' and tags.`{TRIAL_TAG}` != ''"
    if status:
        query += f" and attributes.status = '{status}'"
    return client.search_runs(ids, filter_string=query, max_results=50000)


def fail_trial_runs(config: Any, ref: StudyRef, numbers: list[int], reason: str) -> list[str]:
    """Mark FAILED (tag ``dlrun.error``) the RUNNING MLflow runs of trials ``numbers``; their run ids."""
    if not OmegaConf.select(config, "tracking.enabled"):
        return []
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.store import resolve_uri

    uri, _ = resolve_uri(OmegaConf.select(config, "tracking.uri"), Path(str(config.hydra.runtime.cwd)))
    client = MlflowClient(tracking_uri=uri)
    wanted = {str(n) for n in numbers}
    failed = []
    for run in trial_runs(client, ref, status="RUNNING"):
        if run.data.tags.get(TRIAL_TAG) in wanted:
            client.set_tag(run.info.run_id, "dlrun.error", reason)
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
    return failed
