"""Where an interrupted or crashed training run continues: its last checkpoint, run dir and MLflow run.

``resume=RUN_ID`` (or ``runs:/RUN_ID``) finds the run's output dir in its tag ``dlrun.output_dir``;
``resume=DIR`` or ``resume=FILE.ckpt`` names it directly; and a job whose run dir already holds
``checkpoints/last.ckpt`` (``hydra.run.dir=X`` again) continues on its own. The config is the one the
checkpoint recorded, with this job's command line on top (e.g. more ``trainer.max_epochs``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlrun.config.restore import restore_config
from dlrun.errors import UserError
from dlrun.tasks.checkpoints import CheckpointError, embedded_config, read_checkpoint, user_path

LAST = Path("checkpoints") / "last.ckpt"


@dataclass
class ResumePoint:
    """A checkpoint to continue from, the run it belongs to, and the restored config and job."""

    ckpt_path: Path
    run_id: str | None
    cfg: DictConfig
    job: Any
    epochs_done: int
    global_step: int

    def run_spec(self, spec: Any) -> Any:
        """The job's RunSpec, pointed at the run being continued (a new run when the run id is unknown)."""
        return replace(spec, resume_run_id=self.run_id) if spec is not None and self.run_id else spec

    def tags(self) -> dict[str, str]:
        """Tags recording the resume on the continued run."""
        return {
            "dlrun.resumed_from": f"{self.ckpt_path} (epoch {self.epochs_done}, step {self.global_step})",
            "dlrun.resume_overrides": " ".join(self.job.overrides),
        }

    def attach_logger(self, trainer: Any, run: Any) -> None:
        """Swap the trainer's MLflow logger for one that skips steps the run already recorded."""
        if run.run_id is None or self.run_id is None:
            return
        from dlrun.tracking.resumed_logger import ResumedRunLogger

        trainer.loggers = [ResumedRunLogger(run.tracking_uri, run.run_id, writer=getattr(run, "client", None))]

    def describe(self) -> str:
        """One line for the terminal."""
        run = f" of run {self.run_id}" if self.run_id else ""
        return f"resuming{run} from {self.ckpt_path} (epoch {self.epochs_done}, step {self.global_step})"


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Training epochs the checkpoint has completed (its validation done)."""
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
        return int(progress["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", 0))


def find_resume_point(cfg: DictConfig, job: Any) -> ResumePoint | None:
    """The checkpoint this train job continues from, or None for a fresh run."""
    # `ckpt=` names the checkpoint for every task (DESIGN); for training it means: continue from it.
    name = "resume" if cfg.get("resume") else "ckpt"
    ref = cfg.get("resume") or cfg.get("ckpt")
    run_id: str | None = None
    if ref:
        path, run_id = _locate(str(ref), cfg, job, name)
    else:
        path = job.output_dir / LAST
        if not path.is_file():
            return None
    key = f"{name}={ref}" if ref else str(path)
    checkpoint = read_checkpoint(path, name)
    run_id = run_id or (checkpoint.get("dlrun") or {}).get("run_id")
    restored = restore_config(cfg, embedded_config(checkpoint, f"{key} ({path})"), job.overrides, key=name)
    if (
        run_id
        and cfg.tracking.enabled
        and not _can_continue(restored, job, run_id, checkpoint, key, explicit=bool(ref))
    ):
        return None
    with_dir = replace(job, output_dir=path.parent.parent if path.parent.name == "checkpoints" else path.parent)
    return ResumePoint(path, run_id, restored, with_dir, epochs_done(checkpoint), int(checkpoint.get("global_step", 0)))


def _locate(ref: str, cfg: DictConfig, job: Any, name: str = "resume") -> tuple[Path, str | None]:
    """``resume=`` (or ``ckpt=``) value -> (checkpoint path, run id if named)."""
    from dlrun.tracking.artifacts import client_for, get_run, parse_run_ref

    path = user_path(ref, job.cwd)
    if path.is_dir():
        for candidate in (path / LAST, path / "last.ckpt"):
            if candidate.is_file():
                return candidate, None
        raise CheckpointError(f"{name}={ref}: no {LAST} in this folder")
    if path.is_file():
        return path, None
    run_ref = parse_run_ref(ref)
    if run_ref is None:
        raise CheckpointError(
            f"{name}={ref}: no such run dir or checkpoint, and not an MLflow run id (8+ hex digits of one)"
        )
    run_id = run_ref[0]
    if not cfg.tracking.enabled:
        raise UserError(f"{name}={ref}: resuming by run id needs MLflow (tracking.enabled=false)")
    run = get_run(client_for(cfg.tracking.uri, job.cwd), run_id, name)
    run_id = run.info.run_id  # the full id, also when a prefix was given
    output_dir = run.data.tags.get("dlrun.output_dir")
    if not output_dir:
        raise CheckpointError(f"{name}={ref}: the run has no tag dlrun.output_dir (not a dlrun training run?)")
    last = Path(output_dir) / LAST
    if not last.is_file():
        raise CheckpointError(f"{name}={ref}: no {last} (the run's dlrun.output_dir); pass {name}=PATH/TO/last.ckpt")
    return last, run_id


def _can_continue(cfg: DictConfig, job: Any, run_id: str, checkpoint: dict[str, Any], key: str, explicit: bool) -> bool:
    """Check the run exists; a FINISHED run continues only when asked to train for more epochs."""
    from dlrun.tracking.artifacts import RunNotFound, client_for, get_run

    client = client_for(cfg.tracking.uri, job.cwd)
    try:
        run = get_run(client, run_id, "resume")
    except RunNotFound as err:
        raise RunNotFound(f"{key}: its MLflow run {run_id} is not in {client.tracking_uri} (tracking.uri)") from err
    if run.info.status != "FINISHED":
        return True
    max_epochs = cfg.trainer.get("max_epochs")
    done = epochs_done(checkpoint)
    if explicit and max_epochs is not None and max_epochs > done:
        return True
    if explicit:
        raise UserError(f"{key}: the run already FINISHED {done} epochs; raise trainer.max_epochs to train on")
    print(f"{key} belongs to FINISHED run {run_id}: starting a new run in the same folder", file=sys.stderr)
    return False
