"""Checkpoint files: written whole or not at all, as plain data; ``last.ckpt`` after every epoch.

``last.ckpt`` is the point a crashed or killed run resumes from.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning import callbacks
from pytorch_lightning.plugins.io import TorchCheckpointIO

from dlrun._upstream import lightning_checkpoints_per_step
from dlrun.config.plain import plain
from dlrun.errors import UserError


class CheckpointWriteError(UserError):
    """A checkpoint file could not be written (full disk, no permission); the message names the file."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing a temporary file beside the target, then renaming it.

    Lightning's own writer goes through fsspec, which writes local files into the system temp folder and
    then *copies* them across file systems: a full disk mid-copy leaves a truncated ``epochNNN.ckpt``
    (and a resume from it fails). Here the bytes reach the disk (``fsync``) before ``os.replace`` swaps
    the file in, so the target is the old file or the whole new one, never a torn one. OmegaConf
    containers anywhere in the checkpoint (e.g. a user module's ``save_hyperparameters(cfg)``) are stored
    as plain lists and dicts, so every checkpoint loads with ``torch.load(..., weights_only=True)``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to local ``path`` atomically; other URLs (``s3://``) go to Lightning's writer."""
        if "://" in str(path):
            super().save_checkpoint(plain_checkpoint(checkpoint), path, storage_options)
            return
        write_atomically(plain_checkpoint(checkpoint), Path(path))


def plain_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with OmegaConf containers as plain data, and without ``hparams_type`` entries naming
    OmegaConf classes (a class cannot be loaded with ``weights_only=True``; Lightning loads plain dicts
    without it)."""
    checkpoint = plain(checkpoint)
    omegaconf_types = [
        key
        for key, value in checkpoint.items()
        if str(key).endswith("hparams_type") and isinstance(value, type) and value.__module__.startswith("omegaconf")
    ]
    return {k: v for k, v in checkpoint.items() if k not in omegaconf_types} if omegaconf_types else checkpoint


def write_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` into a temporary file in ``path``'s folder, fsync it, then rename it to ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as err:
        raise CheckpointWriteError(f"{path}: cannot write checkpoint ({_reason(err)})") from err
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # in memory first, as Lightning does: write errors then come as OSError
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(buffer.getbuffer())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(err, OSError):
            raise CheckpointWriteError(f"{path}: cannot write checkpoint ({_reason(err)})") from err
        raise
    _fsync_folder(path.parent)  # the rename itself survives a power cut


def _reason(err: OSError) -> str:
    if err.errno in (errno.ENOSPC, errno.EFBIG):
        return "no space left on the device" if err.errno == errno.ENOSPC else "file size limit reached"
    return err.strerror or type(err).__name__


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders: the rename is as durable as it gets there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def use_atomic_writes(trainer: pl.Trainer) -> None:
    """Make ``trainer`` write checkpoints with ``AtomicCheckpointIO`` unless it was given a writer of its own."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (same name, so the same state key in checkpoints), key worked out once.

    Lightning reads ``callback.state_key`` at every callback hook call, ~7 times a training step, and
    ``ModelCheckpoint`` rebuilds it from its settings each time (~9 us here, ~1% of an MNIST MLP step
    for two of them). Its settings do not change after construction.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Lightning's setup; checkpoints of this trainer are then written atomically (``AtomicCheckpointIO``)."""
        use_atomic_writes(trainer)
        super().setup(trainer, pl_module, stage)

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint{'monitor': ..., 'mode': ..., ...}``, as Lightning's."""
        key = self.__dict__.get("_state_key")
        if key is None:
            key = self.__dict__["_state_key"] = super().state_key
        return key

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Lightning's per-step checkpointing; with neither a step nor a time interval set there is nothing to do."""
        if not lightning_checkpoints_per_step(self) and pl_module.automatic_optimization:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def last_checkpoint(dirpath: Path) -> ModelCheckpoint:
    """A checkpoint callback that overwrites ``dirpath/last.ckpt`` at the end of every epoch.

    Lightning 2.6's ``save_last=True`` writes ``last.ckpt`` only when a top-k checkpoint was saved in the
    same step, so a run whose metric stops improving would resume epochs behind. Put this callback after
    the top-k one: the file then also holds that callback's latest state.
    """
    return ModelCheckpoint(
        dirpath=dirpath,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_last=False,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
