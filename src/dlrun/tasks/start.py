"""Where a training job starts: fresh, or from a resume point; either way one object opens its run.

``train()`` asks it for the config to use, the run to write to, the checkpoint to fit from and the logger
to attach, and never branches on resuming itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlrun.sweeping.threads import THREADS_PARAM, torch_threads
from dlrun.tasks.job import Job, current_job, run_spec
from dlrun.tasks.resume import ResumePoint, find_resume_point
from dlrun.tracking.run import Run, tracked_run


@dataclass
class Start:
    """A training job's starting point: its config and job, and the resume point when it continues a run."""

    cfg: DictConfig
    job: Job
    resume: ResumePoint | None = None
    rerun_of: str | None = None  # rerun=RUN_ID: the recorded run whose config this fresh run runs again

    @classmethod
    def of(cls, cfg: DictConfig) -> Start:
        """The start of this Hydra job: ``resume=``/``ckpt=``, a run dir holding ``checkpoints/last.ckpt``, a
        recorded run's config (``rerun=``), or fresh."""
        job = current_job(cfg)
        if cfg.get("rerun"):
            from dlrun.tasks.rerun_config import rerun_config

            restored, run_id = rerun_config(cfg, job)
            return cls(restored, job, rerun_of=run_id)
        resume = find_resume_point(cfg, job)
        return cls(resume.cfg, resume.job, resume) if resume is not None else cls(cfg, job)

    @property
    def ckpt_path(self) -> Path | None:
        """The checkpoint ``trainer.fit`` continues from (None: from scratch)."""
        return self.resume.ckpt_path if self.resume else None

    def describe(self) -> str | None:
        """One line for the terminal when continuing (None when fresh)."""
        return self.resume.describe() if self.resume else None

    def finished_twin(self, metric: str | None) -> Any:
        """A fresh sweep job whose exact config already FINISHED: that run's record (the job is skipped); else None."""
        if self.resume is not None:
            return None
        from dlrun.sweeping.bookkeeping import reuse_finished

        return reuse_finished(run_spec(self.cfg, self.job), metric)

    @contextmanager
    def open_run(self, config: dict[str, Any]) -> Iterator[Run]:
        """The job's MLflow run: a new one recording config and overrides, or the continued one, tagged as resumed."""
        spec = run_spec(self.cfg, self.job)
        continues = self.resume is not None and self.resume.run_id is not None
        with tracked_run(self.resume.run_spec(spec) if self.resume else spec) as run:
            if continues:
                run.set_tags(self.resume.tags())
            else:
                run.log_config(config, self.job.overrides)
                if self.rerun_of:
                    from dlrun.tasks.rerun_config import RERUN_TAG

                    run.set_tags({RERUN_TAG: self.rerun_of})
                # Only on new runs: a resumed run keeps its first value (MLflow params cannot change).
                run.log_params({THREADS_PARAM: str(torch_threads())})
                if run.run_id is not None and self.cfg.tracking.get("capsule", True):
                    from dlrun.tracking.capsule import log_capsule

                    log_capsule(run, self.job.cwd)  # what it takes to run it again: code and environment
            yield run

    def attach_logger(self, trainer: Any, run: Run) -> None:
        """A continued run's metric history goes on without repeating the steps it already recorded."""
        if self.resume is not None:
            self.resume.attach_logger(trainer, run)
