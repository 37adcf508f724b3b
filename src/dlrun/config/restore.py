"""Rebuild a run's config from the one its checkpoint recorded, with this job's command line on top.

The recorded config is resolved (plain values), so it describes exactly the trained network and its data,
even if dlrun's shipped defaults changed since. What depends on this machine and this job (where data
and runs live, the task and its inputs) comes from the job's own composition instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlrun._upstream import omegaconf_raw_value
from dlrun.errors import ConfigError

# Keys that describe this job, not the trained model: always taken from the current composition.
JOB_KEYS = ("task", "ckpt", "resume", "rerun", "split", "input", "output", "paths", "tracking", "average")
# Groups that define what was trained; choosing another option for them cannot apply to a checkpoint.
TRAINED_GROUPS = ("data", "model", "objective")
# Interpolations that point at this machine (data folders, output dirs, environment variables).
LOCAL_MARKERS = ("${paths.", "${hydra:", "${oc.env:")
# Of those, the ones naming this job's own output folder: never a recorded run's.
OUTPUT_MARKERS = ("${paths.output_dir}", "${hydra:runtime.output_dir}")


def restore_config(
    current: DictConfig,
    recorded: Mapping[str, Any],
    overrides: Sequence[str],
    key: str = "ckpt",
    recorded_inputs: bool = False,
) -> DictConfig:
    """``recorded`` (a checkpoint's config) + this job's keys and local paths + the job's ``overrides``.

    ``recorded_inputs`` (a rerun): input paths stay as recorded (the same files, checked by digest); only
    the job's output folder is this job's.
    """
    restored = OmegaConf.create(dict(recorded))
    for name in current:
        if name in JOB_KEYS or name not in restored:
            restored[name] = _raw(current, name)  # interpolations resolve on this machine
    markers = OUTPUT_MARKERS if recorded_inputs else LOCAL_MARKERS
    for name in restored:
        node, mine = restored.get(name), current.get(name)
        if isinstance(node, DictConfig) and isinstance(mine, DictConfig) and name not in JOB_KEYS:
            if node.get("_target_") == mine.get("_target_"):
                _copy_local_leaves(mine, node, markers)
    _apply_overrides(restored, current, overrides, key)
    return restored


def _copy_local_leaves(source: DictConfig, target: DictConfig, markers: Sequence[str] = LOCAL_MARKERS) -> None:
    """Copy leaves of ``source`` written as machine-local interpolations (``${paths.data_dir}/...``) into ``target``."""
    for name in source:
        value = omegaconf_raw_value(source, name)
        if isinstance(value, DictConfig):
            if isinstance(target.get(name), DictConfig):
                _copy_local_leaves(value, target[name], markers)
            continue
        if isinstance(value, str) and any(marker in value for marker in markers) and name in target:
            target[name] = value


def _apply_overrides(restored: DictConfig, current: DictConfig, overrides: Sequence[str], key: str) -> None:
    """Re-apply the command line: values as Hydra composed them into ``current``, groups checked or swapped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = _group_names(current)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        name = override.key_or_group
        if name.startswith("hydra") or name in JOB_KEYS or override.package:
            continue
        if name in groups or name == "experiment":
            _apply_group(restored, current, name, override.input_line or name, key)
        elif override.is_delete():
            parent, _, leaf = name.rpartition(".")
            node = OmegaConf.select(restored, parent) if parent else restored
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
        else:
            OmegaConf.update(restored, name, OmegaConf.select(current, name), merge=False, force_add=True)


def _apply_group(restored: DictConfig, current: DictConfig, name: str, line: str, key: str) -> None:
    """A group choice: must match the checkpoint for what was trained; replaces the node otherwise."""
    if name == "experiment":
        return  # a preset only sets values the checkpoint already recorded
    if name in TRAINED_GROUPS:
        mine, theirs = current[name].get("_target_"), restored[name].get("_target_")
        if mine != theirs:
            raise ConfigError(
                f"{line}: the checkpoint ({key}) was trained with {name} {theirs}; "
                f"drop {line} or pick a matching checkpoint"
            )
        return
    restored[name] = _raw(current, name)


def _raw(cfg: DictConfig, name: str) -> Any:
    """``cfg[name]`` as plain data with its interpolations unresolved."""
    value = omegaconf_raw_value(cfg, name)
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=False)
    return value


def _group_names(cfg: DictConfig) -> set[str]:
    """Config groups of the running job (``model``, ``trainer``, ...) from Hydra's choices, if Hydra runs."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {"data", "model", "objective", "optimizer", "scheduler", "trainer", "tracking", "paths"}
    return {k for k in HydraConfig.get().runtime.choices if not k.startswith("hydra")}
