"""The wiring every task shares: the job, its MLflow run, data and objective built from the config, the trainer.

``train``, ``eval``, ``predict`` and ``summary`` sit above this module and call only it, the contracts
(``dlrun.contracts``) and the tracking package; nothing here imports a task.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

import dlrun
from dlrun.config.build import build, check_node, locate
from dlrun.config.validate import check_call, check_values
from dlrun.contracts import DataView, ObjectiveView, RunContext, check_classes, data_view, objective_view
from dlrun.errors import ConfigError
from dlrun.tracking.run import RunSpec

TASK_NAMES = ("train", "eval", "predict", "summary")  # dlrun.tasks.TASKS dispatches them


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
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def dlrun_source() -> str:
    """dlrun's version, plus its commit when it runs from a source checkout (``0.1.0+abc123``)."""
    package = Path(dlrun.__file__).resolve().parent
    if (package.parents[1] / ".git").exists():
        commit = git_commit(package)
        if commit:
            return f"{dlrun.__version__}+{commit}"
    return dlrun.__version__


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
        system_metrics=bool(cfg.tracking.get("system_metrics", False)),
    )


# -- config checks, before any data is read or any run opens ----------------------------------------


def objective_takes(cfg: DictConfig) -> set[str]:
    """Constructor parameters of the configured objective (``net``, ``optimizer``, ... for dlrun objectives)."""
    target = locate(cfg.objective._target_, "objective") if "_target_" in cfg.objective else None
    if target is None:
        raise ConfigError("objective: needs a _target_ (a LightningModule class)")
    return set(inspect.signature(target).parameters)


def check_config(cfg: DictConfig) -> None:
    """Fail fast on unknown keys and mistyped values in every group the run uses; drop ``model`` if unused.

    A plain ``LightningModule`` objective builds its own network and optimizer: ``model``, ``optimizer``
    and ``scheduler`` are then not built, not checked, and left out of the recorded config.
    """
    if cfg.task not in TASK_NAMES:
        raise ConfigError(f"task: {cfg.task!r} is not one of {', '.join(TASK_NAMES)}")
    takes = objective_takes(cfg)
    data_cls = check_node(cfg.data, "data")
    objective_cls = check_node(cfg.objective, "objective")
    check_classes(data_cls, objective_cls, builds_model="net" in takes)
    if "net" in takes:
        check_node(cfg.model, "model")
    if "optimizer" in takes:
        check_node(cfg.optimizer, "optimizer")
        if cfg.scheduler.get("_target_"):
            check_node(cfg.scheduler, "scheduler")
    with open_dict(cfg):
        for group, needed in (("model", "net"), ("optimizer", "optimizer"), ("scheduler", "scheduler")):
            if needed not in takes and cfg.get(group) is not None:
                cfg[group] = None  # the objective builds its own: record what actually ran
    trainer_kwargs(cfg)
    check_values(cfg)  # types and ranges, by building what the run will build without data or weights
    from dlrun.training.compile import check_compile_config

    check_compile_config(cfg.get("compile"))


TRAINER_OWNED = {"callbacks", "logger", "default_root_dir", "enable_progress_bar", "enable_model_summary"}


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` without nulls (nulls keep Lightning's defaults), checked against ``Trainer``."""
    import pytorch_lightning as pl

    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    check_call(pl.Trainer, kwargs, "trainer", provided=TRAINER_OWNED)
    return kwargs


# -- building the parts ------------------------------------------------------------------------------


@dataclass
class Parts:
    """What a task works with: the data module and the objective, each behind its contract view."""

    data: DataView
    objective: ObjectiveView

    @property
    def datamodule(self) -> Any:
        """The LightningDataModule itself."""
        return self.data.module

    @property
    def module(self) -> Any:
        """The LightningModule itself."""
        return self.objective.module


def build_data(cfg: DictConfig) -> DataView:
    """The data module of ``cfg.data``, checked against the contract (nothing read yet)."""
    return data_view(build(cfg.data, "data"))


def build_objective(cfg: DictConfig, data: DataView) -> ObjectiveView:
    """The objective, with the network sized by the data and the optimizer factories when it takes them."""
    takes = objective_takes(cfg)
    provided: dict[str, Any] = {}
    if "net" in takes:
        dims = data.dims()
        provided.update(dims)
        provided["net"] = build(cfg.model, "model", **dims)
    else:
        provided.update(data.sizes())
    if "optimizer" in takes:
        provided["optimizer"] = build(cfg.optimizer, "optimizer", deferred=["params"])
        if cfg.scheduler is not None and cfg.scheduler.get("_target_"):
            provided["scheduler"] = build(cfg.scheduler, "scheduler", deferred=["optimizer"])
    module = build(cfg.objective, "objective", **provided)
    return objective_view(module, cfg.checkpoint.get("monitor"), cfg.checkpoint.get("mode"))


def prepare(cfg: DictConfig) -> Parts:
    """Seed, load the data and build the objective sized by it (train and summary start here)."""
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = build_data(cfg)
    data.module.prepare_data()
    data.module.setup("fit")
    return Parts(data, build_objective(cfg, data))


def load_trained(cfg: DictConfig, checkpoint: dict[str, Any], path: Path) -> Parts:
    """The data module (with the checkpoint's state, e.g. vocabularies) and the objective with trained weights."""
    from dlrun.checkpoints import CheckpointError

    data = build_data(cfg)
    state = checkpoint.get(data.state_key)
    if state:  # before the model is sized: a text model's vocabulary sizes come from here
        data.module.load_state_dict(state)
    objective = build_objective(cfg, data)
    try:
        objective.module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        first = " ".join(str(err).split())[:240]
        raise CheckpointError(f"ckpt={path}: weights do not fit the model of the restored config ({first})") from err
    return Parts(data, objective)


def compile_network(cfg: DictConfig, parts: Parts) -> None:
    """``compile.enabled``: torch.compile the objective's network in place (state dicts keep their keys)."""
    settings = cfg.get("compile") or {}  # configs of older checkpoints have no compile block
    if settings.get("enabled", False):
        from dlrun.training.compile import compile_network as compile_in_place

        compile_in_place(parts.module, settings.get("mode", "default"), settings.get("backend", "inductor"))


def example_batch(datamodule: Any) -> Any:
    """One real training batch, as the model sees it (after the data module's transfer hook)."""
    batch = next(iter(datamodule.train_dataloader()))
    return datamodule.on_after_batch_transfer(batch, 0)


def model_summary(objective: ObjectiveView, batch: Any) -> str | None:
    """Every layer with its input/output shapes for a real batch, and parameter counts (None: no example input)."""
    from pytorch_lightning.utilities.model_summary import ModelSummary

    example = objective.example_input(batch)
    if example is None:
        return None
    module = objective.module
    own = module.example_input_array
    module.example_input_array = example
    try:
        return str(ModelSummary(module, max_depth=-1))
    except Exception:
        from dlrun.inspect import trace

        trace(module, example)  # raises ShapeError naming the failing layer and both shapes
        raise
    finally:
        # A batch-derived input would be pushed through the data module's batch hooks again during fit.
        module.example_input_array = own


# -- callbacks and trainer ---------------------------------------------------------------------------


def run_context(cfg: DictConfig, job: Job, run: Any, config: dict[str, Any] | None = None) -> RunContext:
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
        from dlrun.training.histograms import Histograms

        callbacks.append(Histograms(context.output_dir, parts.objective.example_input, publish=context.publish))
    return callbacks


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
            use_distributed_sampler=uses_distributed_sampler(cfg),
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"trainer: {' '.join(str(err).split())}") from err


def uses_distributed_sampler(cfg: DictConfig) -> bool:
    """False for dlrun's data modules (their samplers shard batches across ranks); Lightning's default for others."""
    return not str(cfg.data.get("_target_", "")).startswith("dlrun.")


def torch_threads() -> int:
    """torch's intra-op threads in this process (set per job by ``resources.threads`` at task start)."""
    import torch

    return torch.get_num_threads()


def metric(metrics: dict[str, Any], name: str | None) -> float | None:
    """``metrics[name]`` as a float, None when absent."""
    value = metrics.get(name) if name else None
    return float(value) if value is not None else None


def print_metrics(prefix: str, metrics: dict[str, Any], digits: str = ".4f") -> None:
    """One line of metrics on stdout (rank zero prints; others stay quiet)."""
    from dlrun.tracking.run import is_rank_zero

    if is_rank_zero() and metrics:
        print(prefix + "  ".join(f"{k} {float(v):{digits}}" for k, v in sorted(metrics.items())), flush=True)
