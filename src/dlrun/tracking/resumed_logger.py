"""Lightning's metrics into a resumed run, without writing a (key, step) the run already holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.utilities import rank_zero_only

from dlrun.tracking.logger import RunLogger


def recorded_steps(client: Any, run_id: str) -> dict[str, int]:
    """The highest step recorded so far for each metric of the run."""
    keys = client.get_run(run_id).data.metrics.keys()
    return {key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1) for key in keys}


class ResumedRunLogger(RunLogger):
    """Continue a run's metric history: values at steps it already recorded are dropped.

    A crash between two checkpoints leaves metrics of steps that the resumed run repeats; MLflow
    cannot delete values, so the first record of each step is kept and no step appears twice.
    """

    def __init__(self, tracking_uri: str, run_id: str, writer: Any = None) -> None:
        super().__init__(tracking_uri, run_id, writer=writer)
        self.recorded = recorded_steps(self.experiment, run_id)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log only (key, step) pairs past what the run recorded before this resume."""
        if step is not None:
            metrics = {k: v for k, v in metrics.items() if step > self.recorded.get(k, -1)}
        if metrics:
            super().log_metrics(metrics, step)
