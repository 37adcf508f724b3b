"""Lightning's MLflow logger, bound to a run whose life dlrun manages itself."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only


class RunLogger(MLFlowLogger):
    """Log Lightning metrics into an existing run; never end it and never log params (dlrun does both)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        super().__init__(tracking_uri=tracking_uri, run_id=run_id, log_model=False)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The resolved config is logged once by dlrun, flattened; Lightning's copy would collide."""

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Status is set by ``tracked_run`` after test, not after fit."""
