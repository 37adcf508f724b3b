"""What dlrun says beside its results: one-time notes from the process that owns the run; third-party chatter
silenced for the run, restored after it.

Nothing here changes logging or warnings at import time, so ``import dlrun...`` in a notebook leaves the
notebook's settings alone; ``quiet_third_party()`` is entered by the task layer around a task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator


def is_rank_zero() -> bool:
    """True in the process that owns the run (Lightning sets these for DDP workers it launches)."""
    # SLURM_PROCID: ranks started by srun/submitit (one task per GPU), as Lightning's rank_zero_only reads them.
    return all(int(os.environ.get(var, "0")) == 0 for var in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def say_once(message: str, _said: set[str] = set()) -> None:  # noqa: B006 - the set is the memory
    """Print ``dlrun: note: message`` on stderr the first time it is said in this process, on rank zero only."""
    if message not in _said and is_rank_zero():
        _said.add(message)
        print(f"dlrun: note: {message}", file=sys.stderr, flush=True)


# Loggers whose INFO lines say nothing about the run: Lightning's hardware lines and ads, MLflow's
# "Creating initial MLflow database tables..." and alembic's migration steps on a new store.
QUIET_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "pytorch_lightning.trainer.connectors.signal_connector",  # "SLURM auto-requeueing enabled..."
    "mlflow.store.db.utils",
    "mlflow.system_metrics",  # start/stop lines of tracking.system_metrics
    "alembic",
    "alembic.runtime.migration",
)
# Loggers that log an exception (with its traceback) which they then raise: dlrun reports it in one line.
RAISING_LOGGERS = (
    "mlflow.store.db.utils",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.tracking._tracking_service.client",
)
# Known harmless warnings of the libraries dlrun drives.
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*is smaller than the logging interval.*",
    # Testing a checkpoint never needs the callbacks that wrote it (they matter for resuming a fit only).
    r".*Be aware that when using `ckpt_path`, callbacks used to create.*",
    r".*The dirpath has changed from .* won't be reloaded.*",
    r".*Checkpoint directory .* exists and is not empty.*",  # a resumed run writes into its own folder again
)


class NoTracebacks(logging.Filter):
    """Drops ERROR records that carry an exception: the exception is raised on, and dlrun says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for an error logged with its traceback; other records pass, without traceback."""
        if record.exc_info and record.levelno >= logging.ERROR:
            return False
        record.exc_info = None
        record.exc_text = None
        return True


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """During a dlrun task: third-party INFO chatter off, raised exceptions not logged, known warnings off."""
    quiet = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in quiet]
    no_tracebacks = NoTracebacks()
    raising = [logging.getLogger(name) for name in RAISING_LOGGERS]
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        for logger in raising:
            logger.addFilter(no_tracebacks)
        try:
            yield
        finally:
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)
            for logger in raising:
                logger.removeFilter(no_tracebacks)
