"""Plain Python data from config values: what may go into a checkpoint or an MLflow record.

Hydra hands constructors OmegaConf containers (``ListConfig``, ``DictConfig``) for list and dict values.
Stored as they are (e.g. by ``save_hyperparameters``), they make a checkpoint that
``torch.load(..., weights_only=True)`` refuses, so every value dlrun writes is passed through ``plain`` first.
"""

from __future__ import annotations

import sys
from typing import Any


def is_container(value: Any) -> bool:
    """True for an OmegaConf ``ListConfig``/``DictConfig`` (without importing OmegaConf when nobody has)."""
    omegaconf = sys.modules.get("omegaconf")
    return omegaconf is not None and isinstance(value, omegaconf.Container)


def plain(value: Any) -> Any:
    """``value`` with every OmegaConf container inside it turned into lists and dicts (resolved).

    Dicts, lists and tuples are walked; anything else (tensors, numbers, strings) is kept as is. An input
    holding no container is returned unchanged (the same object), so large state dicts are not copied.
    """
    if is_container(value):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        items = {key: plain(item) for key, item in value.items()}
        if all(items[key] is item for key, item in value.items()):
            return value
        converted = type(value)() if type(value) is not dict and _empty_constructible(type(value)) else {}
        converted.update(items)
        return converted
    if isinstance(value, (list, tuple)):
        items_list = [plain(item) for item in value]
        if all(new is old for new, old in zip(items_list, value, strict=True)):
            return value
        if isinstance(value, tuple):
            return tuple(items_list) if type(value) is tuple else type(value)(*items_list)  # namedtuples
        return items_list
    return value


def _empty_constructible(cls: type) -> bool:
    # OrderedDict and Lightning's AttributeDict keep their type; exotic mappings become dicts.
    try:
        cls()
    except Exception:
        return False
    return True
