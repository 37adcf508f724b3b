"""A user's own Lightning callback that holds a run at the end of chosen epochs while a file exists: a test then
stops and starts the tracking server between two epochs, whatever the speed of the machine.

``+callbacks.hold._target_=hold_epochs.HoldEpochs +callbacks.hold.folder=DIR`` waits at the end of epoch N
(counted from 1) while ``DIR/hold-N`` exists.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class HoldEpochs(pl.Callback):
    """At the end of each training epoch, wait while ``folder/hold-<epoch>`` exists."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Wait for the test to remove this epoch's hold file."""
        hold = self.folder / f"hold-{trainer.current_epoch + 1}"
        while hold.exists():
            time.sleep(0.2)
