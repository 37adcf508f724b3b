"""Building objects from ``_target_`` config nodes, with errors that name the offending key."""

from __future__ import annotations

import inspect
import re
from collections.abc import Collection
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlrun.config.validate import check_call, import_failure
from dlrun.errors import ConfigError, UserError


def locate(path: str, key: str) -> Any:
    """Import the object named by a ``_target_`` string."""
    from dlrun._upstream import hydra_locate

    try:
        return hydra_locate(path)
    except ImportError as err:
        raise ConfigError(f"{key}._target_: cannot import {path!r}{import_failure(path, err)}") from err


def accepted_kwargs(target: Any, provided: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``provided`` that ``target``'s signature takes (e.g. dataset dims a model needs)."""
    params = inspect.signature(target).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return dict(provided)
    return {k: v for k, v in provided.items() if k in params}


def check_node(node: DictConfig, key: str, provided: Collection[str] = ()) -> Any:
    """Check a ``_target_`` node's keys and value types against its target; return the target."""
    if "_target_" not in node:
        raise ConfigError(f"{key}: needs a _target_ (the class or function to build)")
    target = locate(node._target_, key)
    check_call(target, OmegaConf.to_container(node, resolve=True), key, provided=provided)
    return target


def build(node: DictConfig, key: str, deferred: Collection[str] = (), **provided: Any) -> Any:
    """Validate ``node`` against its target's signature, then instantiate it with ``provided`` extras.

    ``deferred`` names arguments that a ``_partial_`` object receives later (an optimizer's ``params``).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = locate(node._target_, key) if "_target_" in node else None
    extras = accepted_kwargs(target, provided) if target is not None else {}
    check_node(node, key, provided={*extras, *deferred})
    try:
        return instantiate(node, _convert_="all", **extras)  # constructors see plain lists and dicts
    except InstantiationException as err:
        raise as_config_error(err.__cause__ or err, key) from err
    except (ValueError, TypeError) as err:
        raise as_config_error(err, key) from err


def as_config_error(err: BaseException, key: str) -> BaseException:
    """A constructor's ``ValueError("name: must be ...")`` becomes ``ConfigError("key.name: must be ...")``."""
    if isinstance(err, UserError):
        return err
    message = " ".join(str(err).split())
    if isinstance(err, (ValueError, TypeError)):
        if re.match(r"^\w+: ", message):
            return ConfigError(f"{key}.{message}")
        return ConfigError(f"{key}: {message}")
    return err


def objective_takes(cfg: DictConfig) -> set[str]:
    """Constructor parameters of the configured objective (``net``, ``optimizer``, ... for dlrun objectives)."""
    target = locate(cfg.objective._target_, "objective") if "_target_" in cfg.objective else None
    if target is None:
        raise ConfigError("objective: needs a _target_ (a LightningModule class)")
    return set(inspect.signature(target).parameters)


# The groups an objective may build itself (a plain LightningModule): objective parameter -> config group.
BUILT_BY_DLRUN = {"net": "model", "optimizer": "optimizer", "scheduler": "scheduler"}


def unbuilt(takes: Collection[str]) -> set[str]:
    """Config groups an objective with these constructor parameters leaves unbuilt (it builds its own)."""
    return {group for param, group in BUILT_BY_DLRUN.items() if param not in takes}


def unbuilt_groups(cfg: DictConfig) -> set[str]:
    """Config groups the configured objective does not take (it builds its own network or optimizer)."""
    try:
        return unbuilt(objective_takes(cfg))
    except ConfigError:
        return set()
