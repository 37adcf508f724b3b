"""Inside a trial job: report the monitored metric to the trial after every validation; stop at once when pruned."""

from __future__ import annotations

import sys
from typing import Any

import pytorch_lightning as pl

from dlrun._upstream import optuna_trial
from dlrun.errors import TrialPruned
from dlrun.sweeping.study import RUN_ATTR, StudyRef


class TrialPruning(pl.Callback):
    """Report ``monitor`` as the trial's intermediate value (step: the validation's index, one per epoch by
    default) and raise ``TrialPruned(epochs_trained, value)`` when the study's pruner says so.

    Only rank 0 talks to the study; its answer is broadcast so that every DDP rank stops together.
    Values of a metric whose ``mode`` is opposite to the study's direction are reported negated, so that the
    pruner compares them the right way round.
    """

    def __init__(self, study: StudyRef, number: int, monitor: str, mode: str) -> None:
        self.study_ref, self.number, self.monitor, self.mode = study, number, monitor, mode
        self.validations = 0
        self._trial: Any = None
        self._sign = 1.0

    def _open(self) -> Any:
        if self._trial is None:
            import optuna

            from dlrun.sweeping.pruners import build_pruner, pruner_spec
            from dlrun.sweeping.study import PRUNER_ATTR, load_study

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            probe = load_study(self.study_ref)
            study = load_study(self.study_ref, build_pruner(pruner_spec(probe.user_attrs.get(PRUNER_ATTR))))
            found = [t for t in study.get_trials(deepcopy=False) if t.number == self.number]
            if not found:
                from dlrun.errors import UserError

                raise UserError(f"trial.number: study {study.study_name!r} has no trial {self.number}")
            self._trial = optuna_trial(study, found[0])
            maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            self._sign = -1.0 if maximize != (self.mode == "max") else 1.0
        return self._trial

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Open the trial and store the job's MLflow run id on it (user attribute ``mlflow_run_id``)."""
        if not trainer.is_global_zero:
            return
        trial = self._open()
        run_id = getattr(trainer.logger, "run_id", None)
        if run_id:
            trial.set_user_attr(RUN_ATTR, run_id)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report, ask the pruner, and stop the job with ``TrialPruned`` if it says so."""
        if trainer.sanity_checking:
            return
        step, self.validations = self.validations, self.validations + 1
        value = trainer.callback_metrics.get(self.monitor)
        prune = False
        if trainer.is_global_zero and value is not None:
            trial = self._open()
            trial.report(self._sign * float(value), step=step)
            prune = trial.should_prune()
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            epochs = trainer.current_epoch + 1
            shown = float(value) if value is not None else None
            if trainer.is_global_zero:
                print(
                    f"trial {self.number} pruned after epoch {epochs} ({self.monitor} {shown:.4f})",
                    file=sys.stderr,
                    flush=True,
                )
            raise TrialPruned(epochs, shown)
