"""Test scaffolding, on PYTHONPATH of the dlrun processes of tests/test_optuna_sweeper.py only: until the task
layer calls them itself, wire ``dlrun.sweeping.trial_callbacks`` and ``apply_thread_budget`` into training;
and ``DLRUN_TEST_KILL_TRIAL=N`` SIGKILLs the process after the first training step of trial N (a killed search).

Once ``src/dlrun/train.py`` calls both (it is checked by its source text), this does nothing and can go.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys
from pathlib import Path

from omegaconf import OmegaConf


def _wired(name: str) -> bool:
    src = Path(importlib.util.find_spec("dlrun").origin).parent
    return any(f"{name}(" in (src / f).read_text() for f in ("train.py", "tasks.py", "wiring.py") if (src / f).is_file())


def _kill_class():
    import pytorch_lightning as pl

    class KillDuringTraining(pl.Callback):
        """SIGKILL this process (the search and its trial) after the trial's first training step."""

        def on_train_batch_end(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

    return KillDuringTraining


def _KillDuringTraining():
    return _kill_class()()


def _patch(wiring) -> None:
    original = wiring.build_trainer
    wire_trials, wire_threads = not _wired("trial_callbacks"), not _wired("apply_thread_budget")

    def build_trainer(cfg, job, run, callbacks):
        if wire_threads:
            from dlrun.sweeping.threads import THREADS_PARAM, apply_thread_budget

            run.log_params({THREADS_PARAM: str(apply_thread_budget(cfg))})
        if wire_trials:
            from pytorch_lightning.callbacks import ModelCheckpoint

            from dlrun.sweeping import trial_callbacks

            checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
            callbacks += trial_callbacks(cfg, checkpoint.monitor, checkpoint.mode)
        kill_at = os.environ.get("DLRUN_TEST_KILL_TRIAL")
        if kill_at is not None and str(OmegaConf.select(cfg, "trial.number")) == kill_at:
            callbacks.append(_KillDuringTraining())
        return original(cfg, job, run, callbacks)

    wiring.build_trainer = build_trainer


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "dlrun.wiring":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Hook())
