"""The job a task runs as: what Hydra knows about it, and the MLflow run it writes to."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

import dlrun
from dlrun.callbacks import slurm
from dlrun.sweeping.bookkeeping import job_tags
from dlrun.tracking.provenance import dlrun_source, git_commit
from dlrun.tracking.run import RunSpec

if TYPE_CHECKING:
    from dlrun.tasks.checkpoints import Source


@dataclass
class Job:
    """What Hydra knows about this job: its name, overrides and directories."""

    run_name: str
    overrides: list[str]
    output_dir: Path
    cwd: Path
    choices: dict[str, str]
    sweep_num: int | None = None


def current_job(cfg: DictConfig) -> Job:
    """Describe the running Hydra job (run name: preset name, or ``<data>-<model>``; sweep jobs add their number)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if v is not None and not k.startswith("hydra")}
    sweep_num = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None
    name = cfg.tracking.run_name or choices.get("experiment") or f"{choices.get('data')}-{network_name(cfg, choices)}"
    if sweep_num is not None:
        name = f"{name}-{sweep_num}"
    return Job(
        run_name=name,
        overrides=list(hydra_cfg.overrides.task),
        output_dir=Path(hydra_cfg.runtime.output_dir),
        cwd=Path(hydra_cfg.runtime.cwd),
        choices=choices,
        sweep_num=sweep_num,
    )


def network_name(cfg: DictConfig, choices: dict[str, str]) -> str:
    """The part that names a run beside its data: the model when dlrun builds one, else the objective."""
    from dlrun.config.build import objective_takes

    try:
        builds_model = "net" in objective_takes(cfg)
    except Exception:  # noqa: BLE001 - an objective that cannot be imported is reported by check_config
        builds_model = True
    return str(choices.get("model") if builds_model else choices.get("objective") or "objective")


def run_spec(cfg: DictConfig, job: Job) -> RunSpec | None:
    """The MLflow run this job writes to (None when ``tracking.enabled`` is false)."""
    if not cfg.tracking.enabled:
        return None
    tags = {
        "dlrun.version": dlrun.__version__,
        "dlrun.source": dlrun_source(),
        "dlrun.task": cfg.task,
        "dlrun.overrides": " ".join(job.overrides),
        "dlrun.output_dir": str(job.output_dir),
        "mlflow.source.name": "dlrun",
        "mlflow.source.type": "LOCAL",
    }
    if slurm.job_id():  # a requeued job finds its run by this (tasks/resume.py)
        tags["dlrun.slurm_job_id"] = str(slurm.job_id())
    commit = git_commit(job.cwd)
    if commit:
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
        tags["dlrun.git_commit"] = commit
    tags.update(job_tags(OmegaConf.to_container(cfg, resolve=True)))  # config hash; sweep id and parent run
    return RunSpec(
        uri=cfg.tracking.uri,
        experiment=cfg.tracking.experiment or job.choices.get("data", "dlrun"),
        run_name=job.run_name,
        tags=tags,
        cwd=job.cwd,
        system_metrics=bool(cfg.tracking.get("system_metrics", False)),
    )


def source_run_spec(spec: RunSpec | None, source: Source, task: str, cfg: DictConfig) -> RunSpec | None:
    """The job's RunSpec, named after the source and tagged with where the weights came from."""
    if spec is None:
        return None
    tags = {**spec.tags, "dlrun.source_checkpoint": str(source.path)}
    if source.run_id:
        tags["dlrun.source_run_id"] = source.run_id
    return replace(
        spec,
        run_name=cfg.tracking.run_name or f"{source.name()}-{task}",
        experiment=cfg.tracking.experiment or source.experiment or spec.experiment,
        tags=tags,
    )
