"""The end-of-sweep table: one row per job with its overrides, status and target metric, the best highlighted."""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class JobRow:
    """One job of a sweep, as the table shows it."""

    num: int
    overrides: list[str]
    status: str  # FINISHED | FAILED | KILLED | SKIPPED | PRUNED | MISSING; Optuna trials: COMPLETE | PRUNED | FAIL
    value: float | None = None
    run_id: str | None = None
    error: str | None = None
    reused_run_id: str | None = None
    output_dir: str | None = None
    pruned_epoch: int | None = None  # PRUNED: the epochs it trained before its search's pruner stopped it

    @property
    def ok(self) -> bool:
        """Finished now or earlier (skipped because already done); a COMPLETE Optuna trial."""
        return self.status in ("FINISHED", "SKIPPED", "COMPLETE")

    @property
    def failed(self) -> bool:
        """Failed, killed or missing; a PRUNED trial was stopped on purpose and is not a failure."""
        return not self.ok and self.status != "PRUNED"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the ``sweep_jobs.json`` artifact."""
        return asdict(self)


def best_row(rows: list[JobRow], mode: str) -> JobRow | None:
    """The finished row with the best value (``mode``: max or min), or None if none has a number."""
    scored = [r for r in rows if r.ok and r.value is not None and not math.isnan(r.value)]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r.value)


def status_text(row: JobRow) -> str:
    """FINISHED, ``skipped, done in RUN_ID``, ``PRUNED after epoch N``, or ``FAILED: error``."""
    if row.status == "SKIPPED":
        return f"skipped, done in {row.reused_run_id}"
    if row.status == "PRUNED" and row.pruned_epoch is not None:
        return f"PRUNED after epoch {row.pruned_epoch}"
    if row.error and not row.ok:
        return f"{row.status}: {row.error}"
    return row.status


def sweep_table(rows: list[JobRow], metric: str, mode: str, title: str) -> Any:
    """A rich Table of the sweep's jobs; the best row (by ``metric``, ``mode`` max/min) in bold green."""
    from rich.table import Table

    best = best_row(rows, mode)
    common = common_overrides(rows)
    notes = (["* best"] if best else []) + ([f"every job also had: {' '.join(common)}"] if common else [])
    with_runs = any(r.run_id or r.reused_run_id for r in rows)  # no run column when tracking is off
    table = Table(title=title, title_justify="left", caption="; ".join(notes) or None, caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("overrides", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column(f"{metric} ({mode})", justify="right")
    if with_runs:
        table.add_column("run", overflow="fold")
    for row in sorted(rows, key=lambda r: r.num):
        value = "" if row.value is None else f"{row.value:.4f}"
        style = "bold green" if row is best else ("red" if row.failed else ("dim" if not row.ok else None))
        mark = " *" if row is best else ""
        cells = [f"{row.num}{mark}", " ".join(o for o in row.overrides if o not in common), status_text(row), value]
        if with_runs:
            cells.append(row.run_id or row.reused_run_id or "")
        table.add_row(*cells, style=style)
    return table


def common_overrides(rows: list[JobRow]) -> list[str]:
    """Overrides that every job of a sweep of several jobs shares (shown once, under the table)."""
    if len(rows) < 2:
        return []
    shared = set(rows[0].overrides).intersection(*(r.overrides for r in rows[1:]))
    return [o for o in rows[0].overrides if o in shared]


def table_text(table: Any, width: int = 160) -> str:
    """The table as plain text (for the parent run's artifact and for logs)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()
