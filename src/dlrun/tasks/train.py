"""``task=train``: fit, then test the best checkpoint, all recorded in one MLflow run. Read top to bottom."""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from dlrun.contracts import ObjectiveView
from dlrun.sweeping import optimized_metric
from dlrun.tasks.checks import check_config, recorded_config
from dlrun.tasks.console import metric, print_config, print_metrics
from dlrun.tasks.parts import compile_network, example_batch, model_summary, prepare
from dlrun.tasks.start import Start
from dlrun.tasks.trainer import build_trainer, training_callbacks
from dlrun.tracking.datasets import log_dataset_inputs
from dlrun.tracking.run import Run, is_rank_zero


def train(cfg: DictConfig) -> float | None:
    """Fit, then test the best checkpoint; record everything in one MLflow run; return ``optimized_metric``."""
    start = Start.of(cfg)  # fresh, or resume=..., or this run dir already holds checkpoints/last.ckpt
    cfg, job = start.cfg, start.job
    check_config(cfg)  # before any run opens: a config error leaves no trace in the store
    config = recorded_config(cfg)
    if is_rank_zero():
        print_config(cfg)
        if start.describe():
            print(start.describe(), flush=True)
    twin = start.finished_twin(optimized_metric(cfg))  # a rerun sweep skips jobs whose config already FINISHED
    if twin is not None:
        return twin.value
    with start.open_run(config) as run:
        parts = prepare(cfg)
        log_dataset_inputs(run, job.choices.get("data", "data"), parts.data.data_files())
        if parts.fold is not None:
            log_fold(run, parts.fold)
        objective = parts.objective
        if objective.monitor is not None:
            run.set_tags({"dlrun.monitor": objective.monitor, "dlrun.monitor_mode": objective.mode})
        batch = example_batch(parts.datamodule)
        summary = model_summary(objective, batch)
        if summary is not None:
            run.log_text(summary, "model_summary.txt")
            if is_rank_zero():
                print(summary)
        compile_network(cfg, parts)  # after the summary: it runs the network on a host batch, uncompiled

        checkpoint, callbacks = training_callbacks(cfg, job, run, parts, config)
        trainer = build_trainer(cfg, job, run, callbacks)
        if objective.monitor is not None and not is_builtin(objective) and trainer.num_sanity_val_steps == 0:
            trainer.num_sanity_val_steps = 1  # a monitor dlrun cannot vouch for is checked before the first epoch
        start.attach_logger(trainer, run)

        trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=start.ckpt_path)
        fit_metrics = dict(trainer.callback_metrics)  # test replaces them; sweepers optimize val/* metrics
        best = checkpoint.best_model_path or None
        results = trainer.test(parts.module, datamodule=parts.datamodule, ckpt_path=best, verbose=False)
        print_metrics("test  ", results[0] if results else {})
        if best:
            run.log_artifact(best, "checkpoints")
        log_model(cfg, run, trainer, objective, batch)
        optimized = optimized_metric(cfg, objective.monitor)
        if optimized == objective.monitor and checkpoint.best_model_score is not None:
            return float(checkpoint.best_model_score)  # the best epoch's value (the one tested), not the last's
        return metric({**fit_metrics, **trainer.callback_metrics}, optimized)


def log_fold(run: Run, fold: dict[str, Any]) -> None:
    """A cross-validation job's fold: its size and digest as tags, its validation indices as ``cv_fold.json``."""
    import json

    run.set_tags({"dlrun.cv.val_count": fold["val_count"], "dlrun.cv.val_digest": fold["val_digest"]})
    run.log_text(json.dumps(fold), "cv_fold.json")


def is_builtin(objective: ObjectiveView) -> bool:
    """True for dlrun's own objectives monitoring their own metric (they log it on every validation)."""
    module = objective.module
    own = type(module).__module__.startswith("dlrun.")
    return own and objective.monitor == getattr(module, "monitor", None)


def log_model(cfg: DictConfig, run: Run, trainer: Any, objective: ObjectiveView, batch: Any) -> None:
    """The network as an MLflow PyTorch model, when the run is tracked and the network takes one tensor.

    fast_dev_run is a smoke check: like Lightning's own checkpoints, no saved model (~2 s of MLflow packaging).
    """
    if run.run_id is None or not cfg.tracking.get("log_model", True) or trainer.fast_dev_run:
        return
    from dlrun.tracking.pytorch_model import log_network

    example = objective.example_input(batch)
    if not run.offline:
        try:
            log_network(run, objective.network, example)
            return
        except Exception as err:
            from dlrun.tracking.spool import is_unreachable

            if not is_unreachable(err):
                raise
    # MLflow's logged model is made on the server, not spooled: the run's checkpoint (spooled) stands for it.
    run.set_tags({"dlrun.model_not_logged": "the tracking server could not be reached"})
    print(
        "dlrun: warning: tracking server away: no MLflow logged model for this run (its checkpoint is kept)",
        file=sys.stderr,
        flush=True,
    )
