"""A SLURM job started again after a requeue or a preemption runs in the folder of the run it was training.

That folder holds ``checkpoints/last.ckpt``, so the job continues the run from there (tasks/resume.py):
the same MLflow run id, the same output folder, no step recorded twice. The run is found in the
tracking store by its tag ``dlrun.slurm_job_id`` and the job's overrides, among runs not FINISHED.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from dlrun.callbacks import slurm


def requeued_run_dir(config: DictConfig) -> str | None:
    """The output dir of the unfinished run this restarted SLURM job opened on an earlier start; else None."""
    job_id = slurm.job_id()
    if job_id is None or not slurm.restarted() or config.get("task") != "train" or not config.tracking.enabled:
        return None
    from dlrun.tracking.artifacts import client_for

    client = client_for(config.tracking.uri, Path(config.hydra.runtime.cwd))
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`dlrun.slurm_job_id` = '{job_id}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    overrides = " ".join(str(o) for o in config.hydra.overrides.task)
    found = [r for r in runs if r.data.tags.get("dlrun.overrides") == overrides and r.data.tags.get("dlrun.output_dir")]
    return found[0].data.tags["dlrun.output_dir"] if found else None


class RequeuedJobs(Callback):
    """Hydra callback: a single run restarted by SLURM takes its earlier run's folder (unless hydra.run.dir is set)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Point ``hydra.run.dir`` at the earlier run's folder, before Hydra makes a new one."""
        if any(str(o).startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra):
            return
        run_dir = requeued_run_dir(config)
        if run_dir is not None:
            with read_write(config.hydra):
                config.hydra.run.dir = run_dir
