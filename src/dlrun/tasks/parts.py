"""Building the parts a task works with: the data module, and the objective with its network sized by the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlrun.config.build import build, objective_takes
from dlrun.contracts import DataView, ObjectiveView, data_view, objective_view


@dataclass
class Parts:
    """What a task works with: the data module and the objective, each behind its contract view."""

    data: DataView
    objective: ObjectiveView
    fold: dict[str, Any] | None = None  # cross-validation: what the run records of its fold (``Fold.record``)

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
    fold = use_fold(cfg, data)
    data.module.setup("fit")
    return Parts(data, build_objective(cfg, data), fold)


def use_fold(cfg: DictConfig, data: DataView) -> dict[str, Any] | None:
    """``cv.fold`` of ``cv.folds``: cut the data module's training set into folds and hand it fold ``cv.fold``
    (before ``setup``); the fold's record for the run, or None outside cross-validation."""
    cv = cfg.get("cv") or {}
    if cv.get("fold") is None:
        return None
    from dlrun.data.folds import class_ids, make_fold

    labels = class_ids(data.training_labels())
    fold = make_fold(labels, int(cv.folds), int(cv.fold), int(cv.get("seed", 0)))
    data.use_fold(fold.train.tolist(), fold.val.tolist())
    return fold.record(labels)


def load_trained(cfg: DictConfig, checkpoint: dict[str, Any], path: Path) -> Parts:
    """The data module (with the checkpoint's state, e.g. vocabularies) and the objective with trained weights."""
    from dlrun.tasks.checkpoints import CheckpointError

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
        from dlrun.tasks.compile import compile_network as compile_in_place

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
        from dlrun.models.inspection import trace

        trace(module, example)  # raises ShapeError naming the failing layer and both shapes
        raise
    finally:
        # A batch-derived input would be pushed through the data module's batch hooks again during fit.
        module.example_input_array = own
