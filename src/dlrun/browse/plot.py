"""``dlrun runs plot METRIC RUN...``: the metric's curves of several runs in one PNG (a sweep: all its jobs)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

from dlrun.browse.records import RunRecord
from dlrun.errors import UserError


def curves(reader: Any, metric: str, refs: list[str]) -> list[dict[str, Any]]:
    """For each named run (a sweep parent stands for its jobs): name, id and the metric's (step, value) points."""
    runs: list[RunRecord] = []
    for ref in refs:
        run = reader.run(reader.resolve(ref, "run"))
        jobs = [r for r in reader.runs([run.experiment_id]) if r.parent_id == run.run_id]
        runs += sorted(jobs, key=lambda r: r.job_num) if jobs else [run]
    found, missing = [], []
    for run in {r.run_id: r for r in runs}.values():
        points = [(s, v) for s, v in reader.history(run.run_id, metric) if not math.isnan(v)]
        (found if points else missing).append((run, points))
    if not found:
        logged = sorted({k for run in runs for k in run.metrics})
        raise UserError(f"{metric}: none of these runs logged it; they logged: {', '.join(logged) or 'no metrics'}")
    for run, _ in missing:
        print(f"note: run {run.short_id} ({run.name}) has no {metric}; left out", file=sys.stderr)
    return [
        {"run_id": run.run_id, "name": run.name, "steps": [s for s, _ in points], "values": [v for _, v in points]}
        for run, points in found
    ]


def default_path(metric: str) -> Path:
    """``runs-val_acc.png`` in the working directory."""
    return Path.cwd() / f"runs-{re.sub(r'[^A-Za-z0-9_.-]+', '_', metric)}.png"


def figure(metric: str, data: list[dict[str, Any]]) -> Any:
    """A matplotlib figure with one line per run, labelled ``name (id8)``."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: this runs over SSH and in batch jobs
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for curve in data:
        marker = "o" if len(curve["steps"]) <= 20 else None
        ax.plot(curve["steps"], curve["values"], marker=marker, label=f"{curve['name']} ({curve['run_id'][:8]})")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def save(metric: str, data: list[dict[str, Any]], path: Path) -> Path:
    """Write the figure to ``path`` (PNG) and return the path."""
    import matplotlib.pyplot as plt

    fig = figure(metric, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
