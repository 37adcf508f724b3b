"""Check config nodes against the signatures of the objects they build: names, types, allowed values.

The constructor's type hints are the schema, so a model's config cannot drift from its code.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from dlrun.errors import ConfigError

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def check_call(target: Callable[..., Any], values: Mapping[str, Any], key: str, provided: Collection[str] = ()) -> None:
    """Raise ConfigError naming ``key.name`` for an unknown name or a value of the wrong type."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in provided
    }
    open_ended = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    hints = _type_hints(target)
    for name, value in values.items():
        if name in _HYDRA_KEYS:
            continue
        if name not in params:
            if open_ended:
                continue
            close = difflib.get_close_matches(name, params, n=1)
            hint = f" (did you mean {key}.{close[0]}?)" if close else ""
            raise ConfigError(f"{key}.{name}: unknown key{hint}; allowed: {', '.join(params)}")
        expected = hints.get(name)
        if expected is not None and not matches(value, expected):
            raise ConfigError(f"{key}.{name}: expected {describe(expected)}, got {value!r}")


def check_choice(value: Any, allowed: Collection[str], key: str) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def _type_hints(target: Callable[..., Any]) -> dict[str, Any]:
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: check names only
        return {}


def matches(value: Any, hint: Any) -> bool:
    """Does a plain config value (from YAML / the command line) fit the annotation ``hint``?"""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if hint is type(None) or hint is None:
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Annotated:
        return matches(value, args[0])
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence, set, frozenset):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return not args or all(matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return isinstance(value, dict)
    if origin is not None:  # Callable, Iterable and other abstract forms: not checkable from config
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if inspect.isclass(hint):
        # Objects (tensors, modules, callbacks) come from nested configs or code, not plain values.
        return isinstance(value, (hint, dict))
    return True


def describe(hint: Any) -> str:
    """Human wording of an annotation: ``one of 'relu', 'gelu'``, ``int or None``, ``list of int``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is typing.Annotated:
        return describe(args[0])
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence):
        return f"list of {describe(args[0])}" if args else "list"
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))
