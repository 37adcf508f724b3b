"""A user's own Lightning callback that holds a run at the end of chosen epochs while a file exists: a test then
stops and starts the tracking server between two epochs, whatever the speed of the machine.

``+callbacks.hold._target_=hold_epochs.HoldEpochs +callbacks.hold.folder=DIR`` waits after epoch N
(counted from 1) while ``DIR/hold-N`` exists.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class HoldEpochs(pl.Callback):
    """After training epoch N (at the start of the next one, once its line is printed and its metrics written),
    wait while ``folder/hold-N`` exists."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Wait for the test to remove the hold file of the epoch before."""
        hold = self.folder / f"hold-{trainer.current_epoch}"
        while hold.exists():
            time.sleep(0.2)
