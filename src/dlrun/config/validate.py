"""Check config nodes against the signatures of the objects they build: names, types, allowed values.

The constructor's type hints are the schema, so a model's config cannot drift from its code.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from dlrun.errors import ConfigError, UserError

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
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args, strict=True))
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


# ---------------------------------------------------------------- values, before any run opens

# Lightning stops a run by any of these; with none of them, trainer.max_epochs=-1 trains forever.
_OTHER_STOPPING_RULES = ("trainer.max_steps", "trainer.max_time", "trainer.fast_dev_run", "early_stopping.patience")
# torch.optim's wording of a bad value ("Invalid learning rate: -0.1") -> the constructor argument.
_TORCH_WORDING = {
    "learning rate": "lr",
    "epsilon": "eps",
    "beta": "betas",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
}
# Required int arguments a data module fills in once it has read its data (vocabulary sizes): stood in by this.
STAND_IN_SIZE = 16


def check_values(cfg: Any) -> None:
    """Raise ConfigError naming the key for a wrong type or range anywhere in the config, before any data is read.

    Builds, without reading data or allocating weights, what the run will build: the data module (its
    constructor checks its values), the network and the objective on PyTorch's ``meta`` device (sized by
    the data module's ``dims`` when it knows them without data, else by stand-ins), the optimizer on one
    dummy parameter, the LR schedule on that optimizer, and a Lightning ``Trainer``. Checks that need the
    data itself (e.g. a text model's sizes, which follow the vocabulary) run when the data is read.
    """
    from omegaconf import OmegaConf

    check_stopping(cfg)
    check_progress(cfg)
    datamodule = _dry_build(cfg.data, "data")
    dims, stood_in = _known_dims(datamodule)
    # A plain LightningModule objective builds its own network and optimizer: those groups are None then.
    model, optimizer_node = cfg.get("model"), cfg.get("optimizer")
    net = (
        _dry_model(model, dims, stood_in, str(cfg.data._target_)) if model is not None and "_target_" in model else None
    )
    optimizer = _dry_build(optimizer_node, "optimizer", deferred=("params",)) if optimizer_node is not None else None
    opt = _call(optimizer, "optimizer", optimizer_node, _dummy_parameters()) if callable(optimizer) else None
    scheduler = None
    if cfg.get("scheduler") is not None and cfg.scheduler.get("_target_"):
        scheduler = _dry_build(cfg.scheduler, "scheduler", deferred=("optimizer",))
        if opt is not None and callable(scheduler):
            _call(scheduler, "scheduler", cfg.scheduler, opt)
    objective = cfg.get("objective", {})
    if "_target_" in objective and net is None and optimizer is None and _builds_alone(objective, dims):
        # A plain LightningModule builds its own network: built here as the run will (not on the meta device).
        _dry_build(objective, "objective", every_fault=True, **dims)
    elif "_target_" in objective:
        import torch

        provided = {
            "net": net if net is not None else torch.nn.Identity(),
            "optimizer": optimizer,
            "scheduler": scheduler,
        }
        with _meta_device():
            _dry_build(cfg.objective, "objective", skip_unknown_faults=stood_in, **provided, **dims)
    if cfg.get("trainer") is not None:
        check_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))


def check_stopping(cfg: Any) -> None:
    """``trainer.max_epochs=-1`` (Lightning's "forever") needs another rule that stops training."""
    from omegaconf import OmegaConf

    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if epochs is None or isinstance(epochs, bool) or not isinstance(epochs, int) or epochs != -1:
        return
    steps = OmegaConf.select(cfg, "trainer.max_steps")
    others = [OmegaConf.select(cfg, key) for key in _OTHER_STOPPING_RULES[1:]]
    if (steps is not None and steps != -1) or any(value not in (None, False, 0) for value in others):
        return
    raise ConfigError(
        "trainer.max_epochs: -1 trains forever; give a number of epochs, or also set one of "
        + ", ".join(_OTHER_STOPPING_RULES)
    )


def check_progress(cfg: Any) -> None:
    """``callbacks.progress_every_n_steps``: a whole number >= 0 (0: one line per epoch)."""
    from omegaconf import OmegaConf

    every = OmegaConf.select(cfg, "callbacks.progress_every_n_steps")
    if every is None:
        return
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ConfigError(
            f"callbacks.progress_every_n_steps: must be a whole number >= 0 (0: one line per epoch), got {every!r}"
        )


def check_trainer(kwargs: Mapping[str, Any]) -> None:
    """Build a Lightning ``Trainer`` from ``trainer.*`` (no logger, no callbacks) to let it check its values."""
    import logging
    import warnings

    import pytorch_lightning as pl

    values = {k: v for k, v in kwargs.items() if v is not None}
    quiet = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pl.Trainer(
                **{k: v for k, v in values.items() if k not in ("logger", "callbacks", "enable_checkpointing")},
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
    except TypeError:
        return  # names and types are check_call's job (with the keys dlrun owns taken out)
    except Exception as err:  # ValueError, MisconfigurationException, ...
        message = " ".join(str(err).split())
        raise ConfigError(f"{_culprit('trainer', values, message)}: {message}") from err
    finally:
        quiet.setLevel(level)


def import_failure(path: str, err: BaseException) -> str:
    """Why ``path`` did not import, as ``: <cause> at FILE:LINE``: a syntax error, a missing package, a raise."""
    cause = err.__cause__ or err.__context__
    if cause is None:
        return ""
    if isinstance(cause, SyntaxError):
        return f": SyntaxError at {cause.filename}:{cause.lineno}: {cause.msg}"
    where = _failing_line(cause)
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        if path.startswith(cause.name + ".") and where is None:
            return f": no module {cause.name!r} in the working directory, on PYTHONPATH or installed"
        return f": {cause.name!r} is not installed (imported{where or ''})"
    if isinstance(cause, AttributeError) and where is None:
        return f": {' '.join(str(cause).split())}"
    return f": {type(cause).__name__}: {' '.join(str(cause).split())}{where or ''}"


def _failing_line(cause: BaseException) -> str | None:
    """`` at FILE:LINE`` of the innermost frame of the user's module (not importlib's), None when there is none."""
    import traceback

    frames = [f for f in traceback.extract_tb(cause.__traceback__) if not f.filename.startswith("<")]
    frames = [f for f in frames if "/hydra/" not in f.filename and "/importlib/" not in f.filename]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else None


def _culprit(key: str, values: Mapping[str, Any], message: str) -> str:
    """``key.name`` for the config name a constructor's message is about, else ``key``.

    In order: a leading ``name: ``, a ``name=`` (``Trainer(devices=0)``), the earliest name mentioned as a
    word, then torch.optim's wording (``Invalid learning rate`` -> ``lr``).
    """
    named = re.match(r"^(\w+): ", message)
    if named and named.group(1) in values:
        return f"{key}.{named.group(1)}"
    for name in re.findall(r"(\w+)=", message):
        if name in values:
            return f"{key}.{name}"
    lowered = message.lower()
    found = []
    for name in values:
        hit = re.search(rf"(?<![\w.]){re.escape(str(name).lower())}(?!\w)", lowered)
        if hit:
            found.append((hit.start(), -len(str(name)), str(name)))
    if found:
        return f"{key}.{min(found)[2]}"
    for name, value in values.items():  # "No supported gpu backend": about accelerator=gpu
        if (
            isinstance(value, str)
            and len(value) > 1
            and re.search(rf"(?<!\w){re.escape(value.lower())}(?!\w)", lowered)
        ):
            return f"{key}.{name}"
    for words, name in _TORCH_WORDING.items():
        if words in lowered and name in values:
            return f"{key}.{name}"
    return key


def _fault(message: str) -> str:
    """The message without a leading ``name: `` (the caller names the key)."""
    return re.sub(r"^\w+: ", "", message)


def _dry_build(
    node: Any,
    key: str,
    deferred: Collection[str] = (),
    skip_unknown_faults: bool = False,
    every_fault: bool = False,
    **provided: Any,
) -> Any:
    """Check names and types of ``node``, then instantiate it with the ``provided`` extras its target takes.

    ``every_fault``: any exception the constructor raises stops the run (with the file and line), not only
    value and type errors: for objects built here exactly as the run will build them.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import get_object, instantiate
    from omegaconf import OmegaConf

    if "_target_" not in node:
        raise ConfigError(f"{key}: needs a _target_ (the class or function to build)")
    try:
        target = get_object(node._target_)
    except Exception as err:
        why = import_failure(node._target_, err)
        raise ConfigError(f"{key}._target_: cannot import {node._target_!r}{why}") from err
    extras = _accepted(target, provided)
    values = OmegaConf.to_container(node, resolve=True)
    check_call(target, values, key, provided={*extras, *deferred})
    try:
        return instantiate(node, _convert_="all", **extras)
    except InstantiationException as err:
        cause = err.__cause__ or err
    except (ValueError, TypeError) as err:
        cause = err
    if isinstance(cause, UserError):
        raise cause
    message = " ".join(str(cause).split())
    culprit = _culprit(key, values, message)
    if culprit == key and skip_unknown_faults:
        return None  # a stand-in size may be at fault: the real build (with the data's sizes) will say
    if not isinstance(cause, (ValueError, TypeError)):
        if every_fault:
            name = getattr(target, "__qualname__", str(node._target_))
            where = _failing_line(cause) or ""
            raise ConfigError(f"{key}: {name}() raised {type(cause).__name__}: {message}{where}") from cause
        return None  # not a value check (e.g. an init scheme on the meta device); the real build will say
    raise ConfigError(f"{culprit}: {_fault(message) if culprit != key else message}") from cause


def _dry_model(node: Any, dims: Mapping[str, Any], stood_in: bool, data_target: str = "?") -> Any:
    """The network on the meta device; says which sizes the data module does not provide."""
    from hydra.utils import get_object

    try:
        target = get_object(node._target_)
    except Exception as err:
        raise ConfigError(f"model._target_: cannot import {node._target_!r}") from err
    given = set(node.keys()) | set(dims)
    required = _required(target)
    missing = [name for name in required if name not in given]
    if missing and not stood_in:
        raise ConfigError(
            f"model: {node._target_} needs {', '.join(missing)}, which data ({data_target}) does not provide "
            f"(it gives {', '.join(dims) or 'no sizes'}); "
            f"pick a data module made for this model, or set model.{missing[0]}"
        )
    if stood_in:
        dims = {**dims, **{name: STAND_IN_SIZE for name in missing}}
    with _meta_device():
        return _dry_build(node, "model", skip_unknown_faults=stood_in, **dims)


def _builds_alone(node: Any, dims: Mapping[str, Any]) -> bool:
    """True when the config and the known data sizes give every argument the objective requires."""
    from hydra.utils import get_object

    try:
        target = get_object(node._target_)
    except Exception:  # noqa: BLE001 - reported by _dry_build
        return True
    return all(name in node or name in dims for name in _required(target))


def _required(target: Any) -> list[str]:
    """Constructor arguments without a default (``self`` and ``*args``/``**kwargs`` left out)."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


def _known_dims(datamodule: Any) -> tuple[dict[str, Any], bool]:
    """The data module's ``dims`` when known before reading data; else ``({}, True)`` (sizes stood in)."""
    try:
        dims = datamodule.dims
    except Exception:  # e.g. vocabulary sizes: known once the training corpus is read
        return {}, True
    return (dict(dims), False) if isinstance(dims, Mapping) else ({}, True)


def _accepted(target: Any, provided: Mapping[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return dict(provided)
    return {k: v for k, v in provided.items() if k in params}


def _dummy_parameters() -> list[Any]:
    import torch

    return [torch.nn.Parameter(torch.zeros(1))]


def _call(factory: Callable[..., Any], key: str, node: Any, argument: Any) -> Any:
    """Call a ``_partial_`` factory (optimizer on dummy parameters, schedule on that optimizer)."""
    from omegaconf import OmegaConf

    try:
        return factory(argument)
    except (ValueError, TypeError) as err:
        message = " ".join(str(err).split())
        values = OmegaConf.to_container(node, resolve=True)
        culprit = _culprit(key, values, message)
        raise ConfigError(f"{culprit}: {message}") from err


def _meta_device() -> Any:
    """Build modules without allocating their weights (a network of any size costs nothing to check)."""
    import torch

    return torch.device("meta")
