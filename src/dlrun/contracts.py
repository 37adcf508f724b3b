"""What dlrun needs from a data module and from an objective: the contract user classes implement.

dlrun's own data modules (MNIST, parallel text) and objectives (classification, translation) are the
first implementations of these base classes; yours can be too, or a plain ``LightningDataModule`` /
``LightningModule`` (see ``docs/extending.md``). The task layer talks to data and objectives through
``data_view`` and ``objective_view`` below and nothing else.

- A **data module** (``DataModule``) hands the network its sizes (``dims``), keeps its state in
  checkpoints (``state_dict``/``load_state_dict``, e.g. vocabularies) and may add callbacks and
  artifacts to a run (``run_callbacks``).
- An **objective** (``Objective``) is the ``LightningModule`` that trains a network: it names the
  metric that checkpointing follows (``monitor``, ``mode``), takes the network's input out of a batch
  (``example_input``, for summaries and the logged MLflow model), counts the units a batch trains on
  (``count_units``, for throughput) and may add callbacks, artifacts and tags (``run_callbacks``).

Subclasses of ``DataModule``/``Objective`` must implement every abstract member: one missing stops the
run with one line naming the class and the member. Plain Lightning classes get the optional parts
replaced by defaults, each said once on stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from torch import nn

from dlrun.errors import ConfigError
from dlrun.logs import say_once

Mode = Literal["min", "max"]


@dataclass
class RunContext:
    """What a module's ``run_callbacks`` hook may use: the run's folder, its artifacts and tags."""

    output_dir: Path
    publish: Callable[[Path, str], None] = lambda path, folder: None
    """``publish(local_file, artifact_folder)``: copy a file into the run's artifacts (no-op untracked)."""
    set_tags: Callable[[Mapping[str, str]], None] = lambda tags: None
    """Set tags on the run (e.g. a metric's signature); no-op untracked."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The run's resolved config, as plain data."""
    plots: bool = True
    """Whether the user wants plots (``callbacks.plots``)."""


class DataModule(pl.LightningDataModule):
    """Base class of dlrun data modules: a ``LightningDataModule`` that sizes the network it feeds."""

    @property
    def dims(self) -> dict[str, Any]:
        """Keyword arguments handed to the model's (and the objective's) constructor, e.g.
        ``{"input_shape": [1, 28, 28], "num_classes": 10}`` or vocabulary sizes and special ids.

        Only the names a constructor takes are passed to it. Available after ``prepare_data`` and
        ``setup("fit")`` (or after ``load_state_dict`` of a checkpoint's state).
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings) saved into every checkpoint, e.g. vocabularies."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved; called before ``dims`` is read when a checkpoint is loaded."""

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """Lightning callbacks this data module adds to a training run; may publish artifacts at once."""
        return []

    def data_files(self) -> dict[str, list[Path]]:
        """Files each split is read from (``{"train": [...], "val": [...], "test": [...]}``), for the run's
        dataset record in MLflow; empty when the data is generated or not file-based."""
        return {}

    # k-fold cross-validation (``cv.folds=K``): optional; a module without both cannot be cross-validated.
    def training_labels(self) -> Sequence[Any]:
        """One label per example of the whole training set (the training and validation splits pooled, in a
        fixed order), e.g. class ids; folds are stratified by them (one constant label: unstratified).
        Called after ``prepare_data``, before ``setup``."""
        raise NotImplementedError

    def use_fold(self, train: Sequence[int], val: Sequence[int]) -> None:
        """Train on the pooled examples ``train`` and validate on ``val`` (indices into the order of
        ``training_labels``) instead of the usual split; called before ``setup``. The test split stays as it is."""
        raise NotImplementedError


class Objective(pl.LightningModule):
    """Base class of dlrun objectives: a ``LightningModule`` that trains a network and says how to judge it.

    ``monitor`` and ``mode`` are usually constructor arguments (so configs can change them).
    """

    monitor: str
    """Metric name that checkpointing, early stopping and sweeps follow, e.g. ``val/acc``."""
    mode: Mode
    """``max`` when a larger ``monitor`` is better, ``min`` otherwise."""
    throughput_unit: str = "samples"
    """What ``count_units`` counts: ``train/<unit>_per_s`` is logged per epoch."""

    def example_input(self, batch: Any) -> Any:
        """The network's input part of a batch (as ``forward`` takes it): a tensor or a tuple of tensors."""
        raise NotImplementedError

    def count_units(self, batch: Any) -> Any:
        """Units a training batch trains on (samples, real target tokens): an int or a 0-dim device tensor."""
        raise NotImplementedError

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """Lightning callbacks this objective adds to a run (plots, samples, tags set at test end)."""
        return []

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """For ``task=predict`` on a classifier: class probabilities ``(batch, classes)`` of a batch as the data
        module hands it over (after ``on_after_batch_transfer``). Text models implement ``predict_lines`` instead."""
        return super().predict_step(batch, batch_idx)

    def predict_lines(self, lines: list[str], datamodule: Any) -> list[str]:
        """Optional, for text models: one output line per input line (``task=predict input=FILE``),
        e.g. a translation or a continuation; ``datamodule`` carries the checkpoint's vocabularies."""
        raise NotImplementedError


# The one table of what a contract subclass must define itself. Methods are checked on the class before
# anything is built; attributes (may be set in ``__init__``) on the instance.
# What a data module needs for cross-validation (``cv.folds``); checked on the class before any run opens.
CROSS_VALIDATION_MEMBERS = ("training_labels", "use_fold")
REQUIRED_MEMBERS: dict[str, tuple[str, ...]] = {
    "Objective": ("monitor", "mode", "example_input", "count_units"),
    "DataModule": ("dims",),  # only when dlrun builds the network (the objective takes ``net``)
}
ATTRIBUTES = frozenset({"monitor", "mode"})


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _overrides(obj: Any, base: type, name: str) -> bool:
    """True when ``obj`` (an instance or a class) defines ``name`` itself, not the base's placeholder."""
    cls = obj if isinstance(obj, type) else type(obj)
    for klass in cls.__mro__:
        if klass is base:
            return False
        if name in vars(klass):
            return True
    return hasattr(obj, name) and not hasattr(base, name)


@dataclass
class DataView:
    """The task layer's view of any data module: sizes, checkpoint state key and run callbacks."""

    module: pl.LightningDataModule

    def dims(self, key: str = "data") -> dict[str, Any]:
        """``module.dims``, required when dlrun builds a network for it (``model=``)."""
        if isinstance(self.module, DataModule) and not _overrides(self.module, DataModule, "dims"):
            raise ConfigError(f"{key}: {_qualname(self.module)} does not implement dims (dlrun.contracts.DataModule)")
        dims = getattr(self.module, "dims", None)
        if not isinstance(dims, Mapping):
            raise ConfigError(
                f"{key}: {_qualname(self.module)} has no dims property (a dict of sizes for the model; "
                "see dlrun.contracts.DataModule), so model= cannot be sized by it"
            )
        return dict(dims)

    def sizes(self) -> dict[str, Any]:
        """``dims`` when the data module has them, else ``{}`` (plain Lightning data modules)."""
        dims = getattr(self.module, "dims", None)
        return dict(dims) if isinstance(dims, Mapping) else {}

    @property
    def state_key(self) -> str:
        """Where Lightning keeps this data module's ``state_dict`` in a checkpoint."""
        return type(self.module).__qualname__

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """The data module's own callbacks, if it has the hook."""
        hook = getattr(self.module, "run_callbacks", None)
        return list(hook(run)) if callable(hook) else []

    def data_files(self) -> dict[str, list[Path]]:
        """Files per split, if the data module says (``{}`` otherwise)."""
        hook = getattr(self.module, "data_files", None)
        return {split: [Path(f) for f in files] for split, files in hook().items()} if callable(hook) else {}

    def training_labels(self) -> Sequence[Any]:
        """The labels of the pooled training set (``DataModule.training_labels``), for cross-validation folds."""
        return self.module.training_labels()  # type: ignore[attr-defined]

    def use_fold(self, train: Sequence[int], val: Sequence[int]) -> None:
        """Make the module train on ``train`` and validate on ``val`` of its pooled training set."""
        self.module.use_fold(train, val)  # type: ignore[attr-defined]


@dataclass
class ObjectiveView:
    """The task layer's view of any objective: a dlrun ``Objective`` or a plain ``LightningModule``."""

    module: pl.LightningModule
    monitor: str | None  # None: nothing monitored (checkpoints keep the last epoch)
    mode: Mode | None

    @property
    def network(self) -> Any:
        """The network to summarize and log: ``net`` of a dlrun objective, the module itself otherwise."""
        net = getattr(self.module, "net", None)
        return net if isinstance(net, nn.Module) else self.module

    @property
    def throughput_unit(self) -> str | None:
        """Unit of ``train/<unit>_per_s``; None (said once) when the module cannot count units."""
        if not self._has("count_units"):
            say_once(f"{_qualname(self.module)} has no count_units(batch): no train/samples_per_s")
            return None
        return getattr(self.module, "throughput_unit", "samples")

    def _has(self, name: str) -> bool:
        if isinstance(self.module, Objective):
            return _overrides(self.module, Objective, name)
        return callable(getattr(self.module, name, None))

    def example_input(self, batch: Any) -> Any | None:
        """The network's input for a batch; Lightning's ``example_input_array`` for a plain module that sets it;
        None (said once) when the module cannot say."""
        if not self._has("example_input"):
            fixed = getattr(self.module, "example_input_array", None)
            if fixed is not None:
                return fixed
            say_once(
                f"{_qualname(self.module)} has no example_input(batch): no layer summary and no logged MLflow model"
            )
            return None
        return self.module.example_input(batch)

    def count_units(self, batch: Any) -> Any:
        """Units of a training batch (the module must have ``count_units``; see ``throughput_unit``)."""
        return self.module.count_units(batch)

    def run_callbacks(self, run: RunContext) -> list[pl.Callback]:
        """The objective's own callbacks, if it has the hook."""
        hook = getattr(self.module, "run_callbacks", None)
        return list(hook(run)) if callable(hook) else []

    def say_unmonitored(self) -> None:
        """For training without a monitor: say once that checkpoints keep the last epoch, and how to change it."""
        say_once(
            f"{_qualname(self.module)} names no monitor: checkpoints keep the last epoch; "
            "set checkpoint.monitor=KEY checkpoint.mode=min|max to keep the best"
        )

    def class_probabilities(self, batch: Any) -> Any:
        """``task=predict`` on a classifier: class probabilities ``(batch, classes)`` of a transferred batch.

        The module's own ``predict_step`` (a dlrun ``Objective``'s, or one a plain module defines) gives them;
        a plain module without one is read as a classifier: softmax of ``forward`` on the batch's inputs (the
        first element of an ``(inputs, targets)`` batch), as Lightning's own default cannot take such a batch.
        """
        import torch

        own = isinstance(self.module, Objective) or _overrides(self.module, pl.LightningModule, "predict_step")
        if own:
            out = self.module.predict_step(batch, 0)
        else:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            out = self.module(inputs)
            out = torch.softmax(out, dim=-1) if isinstance(out, torch.Tensor) and out.dim() == 2 else out
        if not (isinstance(out, torch.Tensor) and out.dim() == 2):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            source = "predict_step" if own else "forward(inputs)"
            raise ConfigError(
                f"task=predict: {_qualname(self.module)}.{source} gave {shape}; predictions need class scores "
                "(batch, classes) - define predict_step(batch, batch_idx) to return them"
            )
        return out

    @property
    def predicts_lines(self) -> bool:
        """True when the objective turns text lines into text lines (``predict_lines``)."""
        return self._has("predict_lines")


def check_classes(data_cls: Any, objective_cls: Any, builds_model: bool) -> None:
    """Check the configured classes against the contract before anything is built (one line per fault)."""
    for key, cls, base, lightning in (
        ("data", data_cls, DataModule, pl.LightningDataModule),
        ("objective", objective_cls, Objective, pl.LightningModule),
    ):
        if isinstance(cls, type) and not issubclass(cls, lightning):
            contract = f"see dlrun.contracts.{base.__name__}"
            raise ConfigError(f"{key}._target_: {_qualname(cls)} is not a {lightning.__name__} ({contract})")
    data_needs_dims = builds_model and isinstance(data_cls, type) and issubclass(data_cls, DataModule)
    for key, cls, base, applies in (
        ("data", data_cls, DataModule, data_needs_dims),
        (
            "objective",
            objective_cls,
            Objective,
            isinstance(objective_cls, type) and issubclass(objective_cls, Objective),
        ),
    ):
        for member in REQUIRED_MEMBERS[base.__name__] if applies else ():
            if member not in ATTRIBUTES and not _overrides(cls, base, member):
                raise ConfigError(
                    f"{key}: {_qualname(cls)} does not implement {member} (dlrun.contracts.{base.__name__})"
                )


def check_cross_validation(data_cls: Any, key: str = "cv.folds") -> None:
    """Refuse cross-validation of a data module class that does not expose its training set (one line)."""
    if not isinstance(data_cls, type):
        return  # built by a factory function: found when the fold is applied
    own = issubclass(data_cls, DataModule)
    missing = [
        name
        for name in CROSS_VALIDATION_MEMBERS
        if not (_overrides(data_cls, DataModule, name) if own else callable(getattr(data_cls, name, None)))
    ]
    if missing:
        raise ConfigError(
            f"{key}: {_qualname(data_cls)} exposes no training set to split into folds (it lacks "
            f"{' and '.join(missing)}; see dlrun.contracts.DataModule and docs/extending.md)"
        )


def data_view(datamodule: Any, key: str = "data") -> DataView:
    """Check that ``datamodule`` is a ``LightningDataModule`` and wrap it for the task layer."""
    if not isinstance(datamodule, pl.LightningDataModule):
        raise ConfigError(
            f"{key}._target_: {_qualname(datamodule)} is not a LightningDataModule (see dlrun.contracts.DataModule)"
        )
    return DataView(datamodule)


def objective_view(
    module: Any, monitor: str | None = None, mode: str | None = None, key: str = "objective"
) -> ObjectiveView:
    """Check ``module`` against the objective contract and wrap it; ``monitor``/``mode`` (config) win if given.

    A dlrun ``Objective`` missing a required member stops here with one line; a plain ``LightningModule``
    without ``monitor`` (and no ``checkpoint.monitor``) gets Lightning's behaviour: checkpoints keep the last
    epoch, no early stopping (training says so once: ``ObjectiveView.say_unmonitored``).
    """
    if not isinstance(module, pl.LightningModule):
        raise ConfigError(
            f"{key}._target_: {_qualname(module)} is not a LightningModule (see dlrun.contracts.Objective)"
        )
    if isinstance(module, Objective):
        for name in REQUIRED_MEMBERS["Objective"]:
            if not _overrides(module, Objective, name) and not (name in ATTRIBUTES and hasattr(module, name)):
                raise ConfigError(f"{key}: {_qualname(module)} does not implement {name} (dlrun.contracts.Objective)")
    monitor = monitor or getattr(module, "monitor", None)
    mode = mode or getattr(module, "mode", None)
    if not monitor:
        return ObjectiveView(module, None, None)
    if mode not in ("min", "max"):
        raise ConfigError(f"checkpoint.mode: expected 'min' or 'max' for {monitor}, got {mode!r}")
    return ObjectiveView(module, str(monitor), mode)
