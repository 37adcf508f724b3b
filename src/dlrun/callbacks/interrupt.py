"""Keep the work of an interrupted run: on Ctrl-C or SIGTERM, stop at a step boundary with a resumable checkpoint.

Under SLURM, the same for the requeue signal (SIGUSR1 before the time limit, ``#SBATCH --signal=SIGUSR1@90``),
then ``scontrol requeue``: the job starts again under the same id and continues the run (tasks/resume.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from dlrun._upstream import lightning_cluster_environment
from dlrun.callbacks import slurm
from dlrun.errors import RunInterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CheckpointOnInterrupt(pl.Callback):
    """During fit, hold Ctrl-C/SIGTERM until the next point Lightning can resume from exactly, then stop there.

    - inside a training step: the step finishes, the full state goes to ``path`` (the run's ``last.ckpt``);
    - during validation or between epochs: training stops before the next step, and the ``last.ckpt`` that
      checkpointing wrote at the end of the epoch stays the resume point (its counters are consistent; a
      save in between would resume one logging step off).

    A second signal stops at once (resume then starts from the last ``last.ckpt``). Failures other than
    interrupts save nothing: after a NaN loss the state is not worth resuming.

    Under Lightning's ``SLURMEnvironment(auto_requeue=True)`` (found from ``SLURM_*`` variables) its requeue
    signal is held the same way, and after the save the job is requeued. It is taken before Lightning's own
    handler would be (that one saves ``hpc_ckpt_N.ckpt`` mid-step and trains on): one resume point, not two.
    With several DDP ranks, the ranks agree after every step whether any of them got it (one small
    all-reduce a step, only under SLURM), so all stop after the same step and save together.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.saved: Path | None = None
        self._previous: dict[int, Any] = {}
        self._pending: int | None = None
        self._at_step_end = False
        self._requeue_signal: int | None = None

    # -- holding the signal ---------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Under SLURM with auto-requeue: hold its requeue signal (before Lightning's fit registers its own)."""
        signum = requeue_signal(trainer)
        if stage == "fit" and signum is not None and threading.current_thread() is threading.main_thread():
            self._requeue_signal = signum
            self._hold(signum)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._holds(trainer):
            for signum in SIGNALS:
                self._hold(signum)

    @staticmethod
    def _holds(trainer: pl.Trainer) -> bool:
        # DDP ranks are stopped by their launcher; keep Lightning's own handling there
        return trainer.world_size == 1 and threading.current_thread() is threading.main_thread()

    def _hold(self, signum: int) -> None:
        self._previous[signum] = signal.getsignal(signum)
        signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._pending is None and self._previous:
            self._pending = signum
            name = signal.Signals(signum).name
            then = f"requeue SLURM job {slurm.job_id()}" if signum == self._requeue_signal else "stop"
            print(
                f"dlrun: {name} received: saving after this training step to {then} (send it again to stop now)",
                file=sys.stderr,
                flush=True,
            )
            return
        self._forward(signum, frame)

    def _forward(self, signum: int, frame: Any) -> None:
        """Hand the signal to the handler that was there before (dlrun's CLI raises RunInterrupted)."""
        handler = self._previous.get(signum, signal.SIG_DFL)
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            raise RunInterrupted(signum)

    def _stop_if_pending(self, at_step_end: bool) -> None:
        if self._pending is not None:
            signum, self._pending = self._pending, None
            self._at_step_end = at_step_end
            self._forward(signum, None)

    def _agree(self, trainer: pl.Trainer) -> None:
        """With several ranks: every rank stops once any of them got the requeue signal (else ranks would hang)."""
        if trainer.world_size > 1 and self._requeue_signal in self._previous:
            if trainer.strategy.reduce_boolean_decision(self._pending is not None, all=False):
                self._pending = self._pending or self._requeue_signal

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.world_size == 1:  # several ranks stop only where they agree to
            self._stop_if_pending(at_step_end=False)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._agree(trainer)
        self._stop_if_pending(at_step_end=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._agree(trainer)
        self._stop_if_pending(at_step_end=False)  # a signal during the last validation: training is complete
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    # -- saving ---------------------------------------------------------------------------------

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        at_step_end, self._at_step_end = self._at_step_end, False
        if isinstance(exception, (KeyboardInterrupt, RunInterrupted)) and at_step_end:
            self._save(trainer)
        requeue = isinstance(exception, RunInterrupted) and exception.signum == self._requeue_signal
        if requeue and trainer.is_global_zero:
            slurm.requeue()  # after the save: SLURM ends this job at once

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.global_step == 0:
            return
        # Write aside, then rename: a second Ctrl-C during the save must not leave a torn last.ckpt.
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial, weights_only=False)  # full state: optimizer, schedule, loops
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        self.saved = self.path


def requeue_signal(trainer: pl.Trainer) -> int | None:
    """The signal SLURM sends before the time limit, when Lightning's SLURM environment requeues; else None."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    environment = lightning_cluster_environment(trainer)
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return int(environment.requeue_signal or signal.SIGUSR1)
    return None
