"""Pruners by name: ``hydra.sweeper.pruner=median|percentile|hyperband|successive_halving|none``, with settings.

The pruner is not part of what Optuna stores: the search process saves its spec as the study attribute
``dlrun.pruner`` and every trial job rebuilds the same pruner from it to answer ``should_prune``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dlrun.errors import ConfigError

PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "none": "NopPruner",
}


def pruner_spec(value: Any) -> dict[str, Any]:
    """``{"name": ..., **settings}`` from ``hydra.sweeper.pruner``: null, a name, or a mapping with ``name``."""
    if value is None:
        return {"name": "none"}
    if isinstance(value, str):
        spec: dict[str, Any] = {"name": value}
    elif isinstance(value, Mapping):
        spec = {str(k): v for k, v in value.items() if v is not None or k == "max_resource"}
    else:
        raise ConfigError(f"hydra.sweeper.pruner: expected one of {', '.join(PRUNERS)}; got {value!r}")
    name = str(spec.get("name", "none")).lower()
    if name not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner: unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    spec["name"] = name
    return spec


def build_pruner(spec: Mapping[str, Any]) -> Any:
    """The Optuna pruner ``spec`` describes."""
    import optuna

    settings = {k: v for k, v in spec.items() if k != "name"}
    cls = getattr(optuna.pruners, PRUNERS[spec["name"]])
    try:
        return cls(**settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hydra.sweeper.pruner: {spec['name']}: {' '.join(str(err).split())}") from err
