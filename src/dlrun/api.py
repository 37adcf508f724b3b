"""dlrun from Python: ``dlrun.run([...overrides])`` runs a task like the CLI; ``dlrun.load(...)`` gives a trained model.

import dlrun
dlrun.run(["model=cnn", "trainer.max_epochs=1"])     # returns the task's result (train: optimized metric)
module, cfg = dlrun.load("runs:/<RUN_ID>")            # LightningModule in eval mode, and its config
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def compose_job(overrides: Sequence[str] = ()) -> DictConfig:
    """The CLI's config for ``overrides``, with Hydra's run-time fields filled in (output dir made absolute)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from dlrun.config.search_path import CONFIG_NAME, register, shipped_dir
    from dlrun.config.user_code import make_importable

    make_importable()
    if any(o in ("-m", "--multirun") for o in overrides):
        raise ValueError("overrides: sweeps (-m) run from the command line only; call dlrun.run once per job")
    register()
    GlobalHydra.instance().clear()  # a previous call (or a notebook's own Hydra) may have initialized it
    with initialize_config_dir(str(shipped_dir("conf")), version_base="1.3", job_name="dlrun"):
        cfg = compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = os.path.abspath(str(cfg.hydra.run.dir))
        cfg.hydra.mode = RunMode.RUN
    return cfg


@contextlib.contextmanager
def _interrupts_as_run_interrupted() -> Iterator[None]:
    """Like the CLI: Ctrl-C/SIGTERM raise RunInterrupted (checkpoint saved, run KILLED), handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from dlrun.errors import raise_interrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, raise_interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(overrides: Sequence[str] = ()) -> Any:
    """Run the task the overrides select (``task=train`` by default) exactly as ``dlrun OVERRIDES`` would.

    Returns the task's result: train the optimized metric, eval the metrics dict, predict the rows or
    translations, summary the layer records. Failures raise (``dlrun.errors.UserError`` and others).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import env_override

    from dlrun._upstream import hydra_save_config
    from dlrun.tasks import run_task

    cfg = compose_job(overrides)
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        output_dir = Path(cfg.hydra.runtime.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        if cfg.hydra.output_subdir is not None:  # the same .hydra/ record the CLI leaves
            hydra_dir = output_dir / str(cfg.hydra.output_subdir)
            hydra_save_config(task_cfg, "config.yaml", hydra_dir)
            hydra_save_config(HydraConfig.instance().cfg, "hydra.yaml", hydra_dir)
            hydra_save_config(cfg.hydra.overrides.task, "overrides.yaml", hydra_dir)
        with env_override(OmegaConf.to_container(cfg.hydra.job.env_set)), _interrupts_as_run_interrupted():
            return run_task(task_cfg)
    finally:
        HydraConfig.instance().cfg = previous


@dataclass
class Loaded:
    """A trained module (eval mode) with its config; unpacks as ``module, config = dlrun.load(...)``."""

    module: Any
    config: DictConfig
    datamodule: Any
    checkpoint_path: Path
    run_id: str | None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.module, self.config))


def load(ckpt_or_run: str | Path, tracking_uri: str | None = None, download_dir: str | Path | None = None) -> Loaded:
    """The trained LightningModule (eval mode, CPU) and resolved config of a checkpoint path, run id or ``runs:/ID``.

    Run ids are looked up in ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``); the
    checkpoint is downloaded to ``download_dir`` (default a temporary folder). ``.datamodule`` carries
    the checkpoint's data state (a text model's vocabularies); no data files are read.
    """
    from dlrun.tasks.checkpoints import resolve
    from dlrun.tasks.parts import load_trained

    source = resolve(
        str(ckpt_or_run), tracking_uri, Path.cwd(), Path(download_dir) if download_dir else None, describe=False
    )
    cfg = OmegaConf.create(source.config)
    parts = load_trained(cfg, source.checkpoint, source.path)
    return Loaded(parts.module.eval(), cfg, parts.datamodule, source.path, source.run_id)
