"""The Lightning Trainer of a task: its callbacks (dlrun's, the parts' and the config's) and its logger."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from dlrun.contracts import RunContext
from dlrun.errors import ConfigError
from dlrun.tasks.checks import callback_nodes, trainer_kwargs
from dlrun.tasks.job import Job
from dlrun.tasks.parts import Parts
from dlrun.tracking.run import Run

if TYPE_CHECKING:
    from dlrun.callbacks.checkpointing import ModelCheckpoint as ModelCheckpointType


def run_context(cfg: DictConfig, job: Job, run: Run, config: dict[str, Any] | None = None) -> RunContext:
    """What data modules' and objectives' ``run_callbacks`` hooks get for this run."""
    wanted = cfg.get("callbacks") or {}
    return RunContext(
        output_dir=job.output_dir,
        publish=run.log_artifact,
        set_tags=run.set_tags,
        config=config if config is not None else OmegaConf.to_container(cfg, resolve=True),
        plots=bool(wanted.get("plots", True)),
    )


def contributed_callbacks(cfg: DictConfig, parts: Parts, context: RunContext) -> list[Any]:
    """Callbacks the data module and the objective add through the contract, plus dlrun's optional histograms."""
    callbacks = parts.data.run_callbacks(context) + parts.objective.run_callbacks(context)
    if (cfg.get("callbacks") or {}).get("histograms", False):
        from dlrun.callbacks.histograms import Histograms

        callbacks.append(Histograms(context.output_dir, parts.objective.example_input, publish=context.publish))
    return callbacks


def training_callbacks(
    cfg: DictConfig, job: Job, run: Run, parts: Parts, config: dict[str, Any]
) -> tuple[ModelCheckpointType, list[Any]]:
    """Every callback of a training run, and the checkpoint callback whose best file ``test`` reads.

    dlrun's own (best and last checkpoints, finite loss, the config embedded in checkpoints, RNG state,
    throughput, checkpoint on Ctrl-C), those the data module and objective contribute, the nodes of the
    ``callbacks`` config group, an Optuna trial's pruning report, and early stopping.
    """
    from pytorch_lightning.callbacks import EarlyStopping

    from dlrun.callbacks.checkpointing import ModelCheckpoint, last_checkpoint
    from dlrun.callbacks.interrupt import CheckpointOnInterrupt
    from dlrun.callbacks.monitors import EmbedConfig, FiniteLoss, MonitorLogged, OnFirstStep, Throughput
    from dlrun.callbacks.rng import RngState
    from dlrun.sweeping import optimized_metric, optimized_mode, trial_callbacks

    objective = parts.objective
    monitor = objective.monitor
    folder = job.output_dir / "checkpoints"
    if monitor is None:  # nothing monitored (Lightning's default): the last epoch is tested and resumed from
        objective.say_unmonitored()
        checkpoint = last_checkpoint(folder)
    else:
        checkpoint = ModelCheckpoint(
            dirpath=folder,
            filename="epoch{epoch:03d}",
            monitor=monitor,
            mode=objective.mode,
            save_top_k=cfg.checkpoint.save_top_k,
            save_last=False,  # last_checkpoint() below: every epoch, not only when the metric improved
            auto_insert_metric_name=False,
        )
    embed = EmbedConfig(config, extra={"run_id": run.run_id, "choices": job.choices})
    # A continued run whose command fails before this keeps its earlier record (tracking.run._restore).
    callbacks = [checkpoint, FiniteLoss(), embed, RngState(), OnFirstStep(run.mark_trained)]
    if monitor is not None:
        key = "checkpoint.monitor" if cfg.checkpoint.get("monitor") else f"{type(objective.module).__name__}.monitor"
        callbacks.append(MonitorLogged(monitor, key))
    if objective.throughput_unit is not None:
        callbacks.append(Throughput(objective.count_units, objective.throughput_unit))
    if cfg.checkpoint.save_last and monitor is not None:
        callbacks.append(last_checkpoint(folder))  # the resume point
    callbacks.append(CheckpointOnInterrupt(folder / "last.ckpt"))
    callbacks += contributed_callbacks(cfg, parts, run_context(cfg, job, run, config))
    callbacks += configured_callbacks(cfg)
    # In an Optuna search: report the optimized metric after every validation; a pruned trial stops at once.
    metric = optimized_metric(cfg, monitor)
    if metric is not None:
        callbacks += trial_callbacks(cfg, metric, optimized_mode(cfg, objective.mode))
    if cfg.early_stopping.patience and monitor is not None:  # without a monitor: refused by check_config
        callbacks.append(EarlyStopping(monitor=monitor, mode=objective.mode, patience=cfg.early_stopping.patience))
    return checkpoint, callbacks


def configured_callbacks(cfg: DictConfig) -> list[Any]:
    """The callbacks the ``callbacks`` config group names as ``_target_`` nodes (``+callbacks.NAME._target_=...``)."""
    from dlrun.config.build import build

    return [build(node, f"callbacks.{name}") for name, node in callback_nodes(cfg).items()]


def build_trainer(cfg: DictConfig, job: Job, run: Run, callbacks: list[Any]) -> Any:
    """A Lightning Trainer from ``cfg.trainer`` plus dlrun's callbacks and MLflow logger."""
    import pytorch_lightning as pl

    from dlrun.callbacks.monitors import EpochLine

    kwargs = trainer_kwargs(cfg)
    if kwargs.get("profiler") is None:
        from dlrun.callbacks.profiling import NoProfiler

        kwargs["profiler"] = NoProfiler()  # Lightning's default no-op profiler, without its cost per hook call
    logger: Any = False
    if run.run_id is not None:
        from dlrun.tracking.logger import DeferStepMetrics, RunLogger

        logger = RunLogger(run.tracking_uri, run.run_id, writer=getattr(run, "client", None))
        callbacks.append(DeferStepMetrics())  # step metrics in batches: no store write on the hot path
    every_n_steps = (cfg.get("callbacks") or {}).get("progress_every_n_steps", 10)
    interactive = sys.stdout.isatty() and bool(every_n_steps)
    if interactive:
        from dlrun.callbacks.progress import ProgressBar

        callbacks.append(ProgressBar(every_n_steps))
    else:
        callbacks.append(EpochLine())
    try:
        return pl.Trainer(
            **kwargs,
            callbacks=callbacks,
            logger=logger,
            default_root_dir=str(job.output_dir),
            enable_progress_bar=interactive,
            enable_model_summary=False,
            use_distributed_sampler=uses_distributed_sampler(cfg),
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"trainer: {' '.join(str(err).split())}") from err


def uses_distributed_sampler(cfg: DictConfig) -> bool:
    """False for dlrun's data modules (their samplers shard batches across ranks); Lightning's default for others."""
    return not str(cfg.data.get("_target_", "")).startswith("dlrun.")
