"""``rerun=RUN_ID``: a training job that runs a recorded run's config again (what ``dlrun rerun`` starts).

The config is the run's ``config.yaml`` artifact (resolved: what ran, whatever dlrun's defaults are now),
with this job's keys (task, paths, tracking) and the overrides this job adds to the recorded ones on top.
Input paths (data folders) stay as recorded: the same files, whose digests ``dlrun rerun`` checks; the
output folder is this job's. The new run is tagged ``dlrun.rerun_of``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from dlrun.config.restore import restore_config
from dlrun.errors import ConfigError, UserError

RERUN_TAG = "dlrun.rerun_of"


def rerun_config(cfg: DictConfig, job: Any) -> tuple[DictConfig, str]:
    """The recorded run's config with this job's keys and added overrides on top, and the run's full id."""
    from dlrun.tracking.artifacts import client_for, download_config, get_run

    ref = str(cfg.rerun)
    if cfg.get("resume") or cfg.get("ckpt"):
        raise ConfigError(f"rerun={ref}: starts the recorded config from scratch; drop resume=/ckpt= (or rerun=)")
    if not cfg.tracking.enabled:
        raise ConfigError(f"rerun={ref}: reads the run from MLflow (tracking.enabled=false)")
    client = client_for(cfg.tracking.uri, job.cwd)
    run = get_run(client, ref, "rerun")
    run_id = run.info.run_id
    if run.data.tags.get("dlrun.task", "train") != "train":
        raise ConfigError(f"rerun={ref}: run {run_id} is a {run.data.tags['dlrun.task']} run; only training reruns")
    recorded = download_config(client, run_id)
    if not isinstance(recorded, dict):
        raise UserError(f"rerun={ref}: run {run_id} has no config.yaml artifact (not a dlrun training run?)")
    recorded.pop("trial", None)  # the Optuna trial a search job ran as: bookkeeping, not config
    given = set(download_config(client, run_id, "overrides.yaml") or [])
    added = [o for o in job.overrides if o not in given]  # the recorded ones built the record already
    return restore_config(cfg, recorded, added, key="rerun", recorded_inputs=True), run_id
