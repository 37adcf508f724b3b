"""A user's own Lightning callback, added from the command line through the ``callbacks`` config group.

``+callbacks.kill._target_=kill_trial.KillDuringTrial +callbacks.kill.at_trial=N
'+callbacks.kill.trial=${oc.select:trial.number,null}'`` SIGKILLs trial N's process (the search and the
trial) after its first training step: a search killed mid-trial, as a crash or ``kill -9`` leaves it.
"""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillDuringTrial(pl.Callback):
    """SIGKILL this process after the first training step, when this job is trial ``at_trial`` (``any``: any trial)."""

    def __init__(self, at_trial: int | str, trial: int | None = None) -> None:
        self.kill = trial is not None and at_trial in (trial, "any")

    def on_train_batch_end(self, *args: object, **kwargs: object) -> None:
        """Kill at once: no handler, no cleanup, no status written."""
        if self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
