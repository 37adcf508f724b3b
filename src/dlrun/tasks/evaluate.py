"""``task=eval``: test a trained checkpoint again, in a new MLflow run that points at its source.

``ckpt`` is a checkpoint file, an MLflow run id or ``runs:/RUN_ID``; the source run's config is restored
from the checkpoint, with this command line on top. ``split=val`` evaluates on the validation split.
On the same data and weights the metrics equal the source run's exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:
    from dlrun.tasks.checkpoints import Source
    from dlrun.tasks.job import Job
    from dlrun.tracking.run import Run

SPLITS = ("test", "val")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Restore the source config, test (or validate) the checkpoint in a new run, return the split's metrics."""
    from dlrun.tasks.checkpoints import load_source
    from dlrun.tasks.job import current_job

    job = current_job(cfg)
    return evaluate_source(cfg, job, load_source(cfg, job), "eval")


def evaluate_source(
    cfg: DictConfig, job: Job, source: Source, task: str, record: Callable[[Run], None] | None = None
) -> dict[str, float]:
    """Test (or validate) the checkpoint ``source`` in a new run named ``<source>-<task>``; ``record`` adds to
    the run (artifacts, tags) before the test."""
    import pytorch_lightning as pl

    from dlrun.config.restore import restore_config
    from dlrun.config.validate import check_choice
    from dlrun.tasks.checks import check_config, recorded_config
    from dlrun.tasks.job import run_spec, source_run_spec
    from dlrun.tasks.parts import load_trained, use_fold
    from dlrun.tasks.trainer import build_trainer, contributed_callbacks, run_context
    from dlrun.tracking.run import is_rank_zero, tracked_run

    cfg = restore_config(cfg, source.config, job.overrides)
    split = cfg.split
    check_choice(split, SPLITS, "split")
    check_config(cfg)
    config = recorded_config(cfg)
    with tracked_run(source_run_spec(run_spec(cfg, job), source, task, cfg)) as run:
        run.log_config(config, job.overrides)
        if record is not None:
            record(run)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        parts = load_trained(cfg, source.checkpoint, source.path)
        parts.datamodule.prepare_data()
        use_fold(cfg, parts.data)  # a cross-validation job's model validates on its own fold (split=val)
        callbacks = contributed_callbacks(cfg, parts, run_context(cfg, job, run, config))
        trainer = build_trainer(cfg, job, run, callbacks)
        loop = trainer.test if split == "test" else trainer.validate
        # The same entry point as training's final test: weights (and data state) come from the checkpoint file.
        loop(parts.module, datamodule=parts.datamodule, ckpt_path=str(source.path), verbose=False)
        metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(f"{split}/")}
        if is_rank_zero():
            origin = f"run {source.run_id}" if source.run_id else str(source.path)
            print(f"{split} of {origin}: " + "  ".join(f"{k} {v:.6g}" for k, v in metrics.items()), flush=True)
        return metrics
