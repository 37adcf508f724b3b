"""A run as the browse commands see it (whatever store it came from), and what it monitors."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

PARENT_TAG = "mlflow.parentRunId"  # as dlrun.sweeping.bookkeeping writes them (not imported: that module needs Hydra)
SWEEP_ID_TAG = "dlrun.sweep_id"
JOB_NUM_TAG = "dlrun.job_num"
BEST_RUN_TAG = "dlrun.best_run_id"
MONITOR_TAG = "dlrun.monitor"
MONITOR_MODE_TAG = "dlrun.monitor_mode"
SHORT_ID = 8  # digits of a run id shown in tables, and accepted as a prefix


@dataclass
class RunRecord:
    """One MLflow run: its info, params, tags and latest metrics; ``best`` holds the monitored metric's best."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    start_ms: int | None
    end_ms: int | None
    artifact_uri: str = ""
    experiment: str = ""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    best: float | None = None
    children: list[RunRecord] = field(default_factory=list)
    is_best: bool = False

    @property
    def short_id(self) -> str:
        """The first 8 digits of the run id."""
        return self.run_id[:SHORT_ID]

    @property
    def parent_id(self) -> str | None:
        """The sweep parent's run id, for a sweep job."""
        return self.tags.get(PARENT_TAG)

    @property
    def is_sweep(self) -> bool:
        """True for a sweep's parent run."""
        return self.tags.get("dlrun.task") == "sweep" or bool(self.children)

    @property
    def job_num(self) -> int:
        """The sweep job's number (0 outside a sweep)."""
        try:
            return int(self.tags.get(JOB_NUM_TAG, "0"))
        except ValueError:
            return 0

    def duration_s(self, now_ms: int | None = None) -> float | None:
        """Seconds from start to end (to now, while RUNNING)."""
        if self.start_ms is None:
            return None
        end = self.end_ms or (now_ms or int(time.time() * 1000) if self.status == "RUNNING" else None)
        return None if end is None else max(0.0, (end - self.start_ms) / 1000)

    def monitor(self) -> tuple[str | None, str]:
        """The monitored metric and its mode (max/min): tag ``dlrun.monitor``, else the config's params."""
        key = self.tags.get(MONITOR_TAG)
        if key:
            return key, self.tags.get(MONITOR_MODE_TAG) or guess_mode(key)
        for group in ("objective", "checkpoint"):
            key = self.params.get(f"{group}.monitor")
            if key and key != "None":
                mode = self.params.get(f"{group}.mode") or self.params.get("objective.mode")
                return key, mode if mode in ("max", "min") else guess_mode(key)
        for child in self.children:  # a sweep parent monitors what its jobs monitor
            key, mode = child.monitor()
            if key:
                return key, mode
        return None, "max"


def guess_mode(key: str) -> str:
    """min for losses, perplexities and errors; max otherwise."""
    return "min" if any(word in key for word in ("loss", "ppl", "perplexity", "err")) else "max"


def better(a: float | None, b: float | None, mode: str) -> bool:
    """True when ``a`` beats ``b`` under ``mode`` (a missing or NaN value never wins)."""
    if a is None or math.isnan(a):
        return False
    if b is None or math.isnan(b):
        return True
    return a > b if mode == "max" else a < b
