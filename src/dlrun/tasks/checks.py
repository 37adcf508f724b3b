"""Config checks, before any data is read or any run opens: a config error leaves no trace in the store."""

from __future__ import annotations

import inspect
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from dlrun.config.build import BUILT_BY_DLRUN, check_node, objective_takes, unbuilt
from dlrun.config.cross_validation import check_cv
from dlrun.config.validate import check_call, check_values
from dlrun.contracts import check_classes
from dlrun.errors import ConfigError
from dlrun.tasks import TASKS


def check_config(cfg: DictConfig) -> None:
    """Fail fast on unknown keys and mistyped values in every group the run uses; drop ``model`` if unused.

    A plain ``LightningModule`` objective builds its own network and optimizer: ``model``, ``optimizer``
    and ``scheduler`` are then not built, not checked, and left out of the recorded config.
    """
    if cfg.task not in TASKS:
        raise ConfigError(f"task: {cfg.task!r} is not one of {', '.join(TASKS)}")
    check_task_keys(cfg)
    takes = objective_takes(cfg)
    data_cls = check_node(cfg.data, "data")
    objective_cls = check_node(cfg.objective, "objective")
    check_classes(data_cls, objective_cls, builds_model="net" in takes)
    if cfg.task == "train":
        check_cv(cfg, data_cls)
    if "net" in takes:
        check_node(cfg.model, "model")
    if "optimizer" in takes:
        check_node(cfg.optimizer, "optimizer")
        if cfg.scheduler.get("_target_"):
            check_node(cfg.scheduler, "scheduler")
    with open_dict(cfg):
        for group in unbuilt(takes):
            if cfg.get(group) is not None:
                cfg[group] = None  # the objective builds its own: record what actually ran
    for name, node in callback_nodes(cfg).items():
        check_node(node, f"callbacks.{name}")
    if (cfg.get("early_stopping") or {}).get("patience") and not configured_monitor(cfg, objective_cls):
        raise ConfigError(
            "early_stopping.patience: the objective names no metric to watch; "
            "set checkpoint.monitor=KEY checkpoint.mode=min|max"
        )
    trainer_kwargs(cfg)
    check_values(cfg)  # types and ranges, by building what the run will build without data or weights
    from dlrun.tasks.compile import check_compile_config

    check_compile_config(cfg.get("compile"))


UNBUILT_GROUPS = tuple(BUILT_BY_DLRUN.values())  # set to null by check_config when the objective builds its own


def recorded_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as runs record it: groups the objective does not use are left out, not written as None."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in config.items() if not (k in UNBUILT_GROUPS and v is None)}


def configured_monitor(cfg: DictConfig, objective_cls: Any) -> str | None:
    """The metric a run will monitor, as far as the config and the objective's class say before it is built."""
    named = cfg.checkpoint.get("monitor") or cfg.objective.get("monitor")
    if named:
        return str(named)
    parameter = inspect.signature(objective_cls).parameters.get("monitor") if callable(objective_cls) else None
    if parameter is not None and isinstance(parameter.default, str):
        return parameter.default
    attribute = getattr(objective_cls, "monitor", None)
    return attribute if isinstance(attribute, str) else None


SPLITS = {"eval": ("test", "val"), "average": ("test", "val"), "predict": ("test", "val", "train")}


def check_task_keys(cfg: DictConfig) -> None:
    """The top-level keys a task reads: ``seed`` a whole number, ``split`` one the task knows, ``output`` writable."""
    from pathlib import Path

    from dlrun.config.validate import check_choice

    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected a whole number, got {seed!r}")
    check_choice(cfg.get("split"), SPLITS.get(cfg.task, ("test", "val", "train")), "split")
    output = cfg.get("output")
    if cfg.task == "predict" and output:
        folder = Path(str(output)).expanduser().absolute().parent
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"output={output}: cannot write there ({existing} is not a writable folder)")


def callback_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The ``callbacks`` group's ``_target_`` nodes by name; a node set to null (``callbacks.NAME=null``) is dropped."""
    nodes = cfg.get("callbacks") or {}
    found = {}
    for name, node in nodes.items():
        if isinstance(node, DictConfig):
            if "_target_" not in node:
                raise ConfigError(f"callbacks.{name}: needs a _target_ (a Lightning Callback class)")
            found[str(name)] = node
    return found


TRAINER_OWNED = {"callbacks", "logger", "default_root_dir", "enable_progress_bar", "enable_model_summary"}


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` without nulls (nulls keep Lightning's defaults), checked against ``Trainer``."""
    import pytorch_lightning as pl

    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    check_call(pl.Trainer, kwargs, "trainer", provided=TRAINER_OWNED)
    return kwargs
