"""The one place that wires data, model, training and tracking together for each task.

Read ``train`` top to bottom for the whole story of a run.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import dlrun
from dlrun.config.build import build, check_node
from dlrun.config.validate import check_call, check_choice
from dlrun.console import print_config
from dlrun.errors import ConfigError
from dlrun.tracking.run import RunSpec, is_rank_zero, tracked_run

# Lightning's start-up chatter (hardware lines, ads) and a torch-internal deprecation say nothing about the run.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")


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
    name = cfg.tracking.run_name or choices.get("experiment") or f"{choices.get('data')}-{choices.get('model')}"
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


def git_commit(folder: Path) -> str | None:
    """HEAD of the git work tree holding ``folder``, with ``-dirty`` if it has changes; None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def run_spec(cfg: DictConfig, job: Job) -> RunSpec | None:
    """The MLflow run this job writes to (None when ``tracking.enabled`` is false)."""
    if not cfg.tracking.enabled:
        return None
    tags = {
        "dlrun.version": dlrun.__version__,
        "dlrun.task": cfg.task,
        "dlrun.overrides": " ".join(job.overrides),
        "dlrun.output_dir": str(job.output_dir),
        "mlflow.source.name": "dlrun",
        "mlflow.source.type": "LOCAL",
    }
    commit = git_commit(job.cwd)
    if commit:
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
        tags["dlrun.git_commit"] = commit
    from dlrun.tracking.sweep import job_tags

    tags.update(job_tags(OmegaConf.to_container(cfg, resolve=True)))  # config hash; sweep id and parent run
    return RunSpec(
        uri=cfg.tracking.uri,
        experiment=cfg.tracking.experiment or job.choices.get("data", "dlrun"),
        run_name=job.run_name,
        tags=tags,
        cwd=job.cwd,
    )


def build_module(cfg: DictConfig, datamodule: Any) -> Any:
    """The network (sized by the data) wrapped in its LightningModule, with optimizer and schedule."""
    dims = datamodule.dims
    net = build(cfg.model, "model", **dims)
    optimizer = build(cfg.optimizer, "optimizer", deferred=["params"])
    scheduler = build(cfg.scheduler, "scheduler", deferred=["optimizer"]) if cfg.scheduler.get("_target_") else None
    return build(cfg.objective, "objective", net=net, optimizer=optimizer, scheduler=scheduler, **dims)


TRAINER_OWNED = {"callbacks", "logger", "default_root_dir", "enable_progress_bar", "enable_model_summary"}


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` without nulls (nulls keep Lightning's defaults), checked against ``Trainer``."""
    import pytorch_lightning as pl

    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    check_call(pl.Trainer, kwargs, "trainer", provided=TRAINER_OWNED)
    return kwargs


def check_config(cfg: DictConfig) -> None:
    """Fail fast, before any data is read, on unknown keys and mistyped values in every group."""
    check_choice(cfg.task, TASKS, "task")
    for key in ("data", "model", "objective", "optimizer"):
        check_node(cfg[key], key)
    if cfg.scheduler.get("_target_"):
        check_node(cfg.scheduler, "scheduler")
    trainer_kwargs(cfg)


def prepare(cfg: DictConfig) -> tuple[Any, Any]:
    """Check the config, seed, load the data and build the module sized by it (train and summary start here)."""
    import pytorch_lightning as pl

    check_config(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build(cfg.data, "data")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, build_module(cfg, datamodule)


def build_trainer(cfg: DictConfig, job: Job, run: Any, callbacks: list[Any]) -> Any:
    """A Lightning Trainer from ``cfg.trainer`` plus dlrun's callbacks and MLflow logger."""
    import pytorch_lightning as pl

    from dlrun.training.callbacks import EpochLine

    kwargs = trainer_kwargs(cfg)
    if kwargs.get("profiler") is None:
        from dlrun.training.profiling import NoProfiler

        kwargs["profiler"] = NoProfiler()  # Lightning's default no-op profiler, without its cost per hook call
    logger: Any = False
    if run.run_id is not None:
        from dlrun.tracking.logger import DeferStepMetrics, RunLogger

        logger = RunLogger(run.tracking_uri, run.run_id)
        callbacks.append(DeferStepMetrics())  # step metrics in batches: no store write on the hot path
    every_n_steps = (cfg.get("callbacks") or {}).get("progress_every_n_steps", 10)
    interactive = sys.stdout.isatty() and bool(every_n_steps)
    if interactive:
        from dlrun.training.progress import ProgressBar

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
            use_distributed_sampler=False,  # dlrun's samplers shard batches across ranks themselves
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"trainer: {' '.join(str(err).split())}") from err


def picture_callbacks(cfg: DictConfig, module: Any, out_dir: Path, publish: Callable[[Path, str], None]) -> list[Any]:
    """Plots switched on in ``callbacks.*``: classification test plots, per-epoch weight/activation histograms."""
    wanted = cfg.get("callbacks") or {}
    callbacks: list[Any] = []
    if wanted.get("plots", True) and hasattr(module.hparams, "get") and module.hparams.get("num_classes"):
        from dlrun.training.classification_plots import ClassificationPlots

        callbacks.append(ClassificationPlots(out_dir, publish=publish))
    if wanted.get("histograms", False):
        from dlrun.training.histograms import Histograms

        callbacks.append(Histograms(out_dir, publish=publish))
    return callbacks


def example_batch(datamodule: Any) -> Any:
    """One real training batch, as the model sees it (after the data module's transfer hook)."""
    batch = next(iter(datamodule.train_dataloader()))
    return datamodule.on_after_batch_transfer(batch, 0)


def model_summary(module: Any, batch: Any) -> str:
    """Every layer with its input/output shapes for a real batch, and parameter counts."""
    from pytorch_lightning.utilities.model_summary import ModelSummary

    module.example_input_array = module.example_input(batch)
    try:
        return str(ModelSummary(module, max_depth=-1))
    except Exception:
        from dlrun.inspect import trace

        trace(module, batch)  # raises ShapeError naming the failing layer and both shapes
        raise
    finally:
        # Lightning would push this raw input through the data module's batch hooks again during fit.
        module.example_input_array = None


def train(cfg: DictConfig) -> float | None:
    """Fit, then test the best checkpoint; record everything in one MLflow run; return ``optimized_metric``."""
    from pytorch_lightning.callbacks import EarlyStopping

    from dlrun.resume import find_resume_point
    from dlrun.training.attention_plots import TranslationSamples
    from dlrun.training.callbacks import EmbedConfig, FiniteLoss, Throughput
    from dlrun.training.checkpointing import ModelCheckpoint, last_checkpoint
    from dlrun.training.interrupt import CheckpointOnInterrupt
    from dlrun.training.rng import RngState

    job = current_job(cfg)
    resume = find_resume_point(cfg, job)  # resume=..., or this run dir already holds checkpoints/last.ckpt
    if resume is not None:
        cfg, job = resume.cfg, resume.job
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
        else:
            run.set_tags(resume.tags())
        datamodule, module = prepare(cfg)
        if hasattr(datamodule, "save_vocab"):
            for path in datamodule.save_vocab(job.output_dir / "vocab"):
                run.log_artifact(path, "vocab")
        batch = example_batch(datamodule)
        summary = model_summary(module, batch)
        run.log_text(summary, "model_summary.txt")
        if is_rank_zero():
            print(summary)

        monitor, mode = cfg.objective.monitor, cfg.objective.mode
        checkpoint = ModelCheckpoint(
            dirpath=job.output_dir / "checkpoints",
            filename="epoch{epoch:03d}",
            monitor=monitor,
            mode=mode,
            save_top_k=cfg.checkpoint.save_top_k,
            save_last=False,  # last_checkpoint() below: every epoch, not only when the metric improved
            auto_insert_metric_name=False,
        )
        embed = EmbedConfig(config, extra={"run_id": run.run_id, "choices": job.choices})
        callbacks = [checkpoint, Throughput(), FiniteLoss(), embed, RngState()]
        if cfg.checkpoint.save_last:
            callbacks.append(last_checkpoint(job.output_dir / "checkpoints"))  # the resume point
        callbacks.append(CheckpointOnInterrupt(job.output_dir / "checkpoints" / "last.ckpt"))
        callbacks += picture_callbacks(cfg, module, job.output_dir, run.log_artifact)
        if hasattr(module, "samples"):
            callbacks.append(TranslationSamples(job.output_dir, publish=run.log_artifact))
        if cfg.early_stopping.patience:
            callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.early_stopping.patience))
        trainer = build_trainer(cfg, job, run, callbacks)
        if resume is not None:
            resume.attach_logger(trainer, run)  # the run's metric history continues without repeated steps

        trainer.fit(module, datamodule=datamodule, ckpt_path=resume.ckpt_path if resume else None)
        fit_metrics = dict(trainer.callback_metrics)  # test replaces them; sweepers optimize val/* metrics
        best = checkpoint.best_model_path or None
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        if is_rank_zero() and results:
            print("test  " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(results[0].items())), flush=True)
        if best:
            run.log_artifact(best, "checkpoints")
        # fast_dev_run is a smoke check: like Lightning's own checkpoints, no saved model (~2 s of MLflow packaging).
        if run.run_id is not None and cfg.tracking.get("log_model", True) and not trainer.fast_dev_run:
            from dlrun.tracking.pytorch_model import log_network

            log_network(run, module, batch)
        if getattr(module, "bleu_signature", None):
            run.set_tags({"dlrun.bleu_signature": module.bleu_signature})
        return _metric({**fit_metrics, **trainer.callback_metrics}, cfg.optimized_metric)


def _metric(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    return float(value) if value is not None else None


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """``task=eval``: test a checkpoint (path, run id, ``runs:/ID``) in a new run; see ``dlrun.evaluate``."""
    from dlrun.evaluate import evaluate as run_eval

    return run_eval(cfg)


def predict(cfg: DictConfig) -> Any:
    """``task=predict``: class predictions (CSV) or translations of a checkpoint; see ``dlrun.predict``."""
    from dlrun.predict import predict as run_predict

    return run_predict(cfg)


def summary(cfg: DictConfig) -> Any:
    """``task=summary``: shapes and parameters of every layer for one real batch; see ``dlrun.summary``."""
    from dlrun.summary import summary as run_summary

    return run_summary(cfg)


TASKS: dict[str, Callable[[DictConfig], Any]] = {"train": train, "eval": evaluate, "predict": predict, "summary": summary}


def run_task(cfg: DictConfig) -> Any:
    """Dispatch on ``cfg.task``."""
    check_choice(cfg.task, TASKS, "task")
    return TASKS[cfg.task](cfg)
