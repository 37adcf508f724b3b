"""``task=train``: fit, then test the best checkpoint, all recorded in one MLflow run. Read top to bottom."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlrun.contracts import ObjectiveView
from dlrun.tasks.checks import check_config
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
    config = OmegaConf.to_container(cfg, resolve=True)
    if is_rank_zero():
        print_config(cfg)
        if start.describe():
            print(start.describe(), flush=True)
    twin = start.finished_twin(cfg.optimized_metric)  # a rerun sweep skips jobs whose config already FINISHED
    if twin is not None:
        return twin.value
    with start.open_run(config) as run:
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

        checkpoint, callbacks = training_callbacks(cfg, job, run, parts, config)
        trainer = build_trainer(cfg, job, run, callbacks)
        start.attach_logger(trainer, run)

        trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=start.ckpt_path)
        fit_metrics = dict(trainer.callback_metrics)  # test replaces them; sweepers optimize val/* metrics
        best = checkpoint.best_model_path or None
        results = trainer.test(parts.module, datamodule=parts.datamodule, ckpt_path=best, verbose=False)
        print_metrics("test  ", results[0] if results else {})
        if best:
            run.log_artifact(best, "checkpoints")
        log_model(cfg, run, trainer, objective, batch)
        return metric({**fit_metrics, **trainer.callback_metrics}, cfg.optimized_metric or objective.monitor)


def log_model(cfg: DictConfig, run: Run, trainer: Any, objective: ObjectiveView, batch: Any) -> None:
    """The network as an MLflow PyTorch model, when the run is tracked and the network takes one tensor.

    fast_dev_run is a smoke check: like Lightning's own checkpoints, no saved model (~2 s of MLflow packaging).
    """
    if run.run_id is None or not cfg.tracking.get("log_model", True) or trainer.fast_dev_run:
        return
    from dlrun.tracking.pytorch_model import log_network

    example = objective.example_input(batch)
    log_network(run, objective.network, example)
