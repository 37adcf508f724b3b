"""``last.ckpt`` after every epoch: the point a crashed or killed run resumes from."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint


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
