"""``task=train``: fit, then test the best checkpoint, all recorded in one MLflow run. Read top to bottom."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlrun.console import print_config
from dlrun.sweeping import trial_callbacks
from dlrun.sweeping.threads import THREADS_PARAM
from dlrun.tracking.datasets import log_dataset_inputs
from dlrun.tracking.run import is_rank_zero, tracked_run
from dlrun.wiring import (
    build_trainer,
    check_config,
    compile_network,
    contributed_callbacks,
    current_job,
    example_batch,
    metric,
    model_summary,
    prepare,
    print_metrics,
    run_context,
    run_spec,
    torch_threads,
)


def train(cfg: DictConfig) -> float | None:
    """Fit, then test the best checkpoint; record everything in one MLflow run; return ``optimized_metric``."""
    from pytorch_lightning.callbacks import EarlyStopping

    from dlrun.resume import find_resume_point
    from dlrun.training.callbacks import EmbedConfig, FiniteLoss, Throughput
    from dlrun.training.checkpointing import ModelCheckpoint, last_checkpoint
    from dlrun.training.interrupt import CheckpointOnInterrupt
    from dlrun.training.rng import RngState

    job = current_job(cfg)
    resume = find_resume_point(cfg, job)  # resume=..., or this run dir already holds checkpoints/last.ckpt
    if resume is not None:
        cfg, job = resume.cfg, resume.job
    check_config(cfg)  # before any run opens: a config error leaves no trace in the store
    config = OmegaConf.to_container(cfg, resolve=True)
    if is_rank_zero():
        print_config(cfg)
        if resume is not None:
            print(resume.describe(), flush=True)
    spec = resume.run_spec(run_spec(cfg, job)) if resume else run_spec(cfg, job)
    if resume is None:
        from dlrun.tracking.sweep import reuse_finished

        reused = reuse_finished(spec, cfg.optimized_metric)  # a rerun sweep skips jobs whose config already FINISHED
        if reused is not None:
            return reused.value
    with tracked_run(spec) as run:
        if resume is None or resume.run_id is None:
            run.log_config(config, job.overrides)
            # Only on new runs: a resumed run keeps its first value (MLflow params cannot change).
            run.log_params({THREADS_PARAM: str(torch_threads())})
        else:
            run.set_tags(resume.tags())
        parts = prepare(cfg)
        log_dataset_inputs(run, job.choices.get("data", "data"), parts.data.data_files())
        objective = parts.objective
        run.set_tags({"dlrun.monitor": objective.monitor, "dlrun.monitor_mode": objective.mode})
        batch = example_batch(parts.datamodule)
        summary = model_summary(objective, batch)
        if summary is not None:
            run.log_text(summary, "model_summary.txt")
            if is_rank_zero():
                print(summary)
        compile_network(cfg, parts)  # after the summary: it runs the network on a host batch, uncompiled

        checkpoint = ModelCheckpoint(
            dirpath=job.output_dir / "checkpoints",
            filename="epoch{epoch:03d}",
            monitor=objective.monitor,
            mode=objective.mode,
            save_top_k=cfg.checkpoint.save_top_k,
            save_last=False,  # last_checkpoint() below: every epoch, not only when the metric improved
            auto_insert_metric_name=False,
        )
        embed = EmbedConfig(config, extra={"run_id": run.run_id, "choices": job.choices})
        callbacks = [checkpoint, FiniteLoss(), embed, RngState()]
        if objective.throughput_unit is not None:
            callbacks.append(Throughput(objective.count_units, objective.throughput_unit))
        if cfg.checkpoint.save_last:
            callbacks.append(last_checkpoint(job.output_dir / "checkpoints"))  # the resume point
        callbacks.append(CheckpointOnInterrupt(job.output_dir / "checkpoints" / "last.ckpt"))
        callbacks += contributed_callbacks(cfg, parts, run_context(cfg, job, run, config))
        # In an Optuna search: report the monitor after every validation; a pruned trial stops at once.
        callbacks += trial_callbacks(cfg, objective.monitor, objective.mode)
        if cfg.early_stopping.patience:
            callbacks.append(
                EarlyStopping(monitor=objective.monitor, mode=objective.mode, patience=cfg.early_stopping.patience)
            )
        trainer = build_trainer(cfg, job, run, callbacks)
        if resume is not None:
            resume.attach_logger(trainer, run)  # the run's metric history continues without repeated steps

        trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=resume.ckpt_path if resume else None)
        fit_metrics = dict(trainer.callback_metrics)  # test replaces them; sweepers optimize val/* metrics
        best = checkpoint.best_model_path or None
        results = trainer.test(parts.module, datamodule=parts.datamodule, ckpt_path=best, verbose=False)
        print_metrics("test  ", results[0] if results else {})
        if best:
            run.log_artifact(best, "checkpoints")
        log_model(cfg, run, trainer, objective, batch)
        return metric({**fit_metrics, **trainer.callback_metrics}, cfg.optimized_metric or objective.monitor)


def log_model(cfg: DictConfig, run: Any, trainer: Any, objective: Any, batch: Any) -> None:
    """The network as an MLflow PyTorch model, when the run is tracked and the network takes one tensor.

    fast_dev_run is a smoke check: like Lightning's own checkpoints, no saved model (~2 s of MLflow packaging).
    """
    if run.run_id is None or not cfg.tracking.get("log_model", True) or trainer.fast_dev_run:
        return
    from dlrun.tracking.pytorch_model import log_network

    example = objective.example_input(batch)
    log_network(run, objective.network, example)
