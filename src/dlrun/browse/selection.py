"""Which runs a listing shows: filters, sweep jobs under their parent, the last N, best values, order."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

from dlrun.browse.records import BEST_RUN_TAG, RunRecord, better
from dlrun.browse.store import EmptyStore, Reader
from dlrun.errors import ConfigError, UserError

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED")


@dataclass
class Query:
    """The listing's filters and order, as given on the command line."""

    experiments: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    name: str | None = None
    filter_string: str | None = None
    last: int = 20
    sort: str | None = None
    ascending: bool = False
    top: int = 0  # with sort: only the N best (after sorting, unlike ``last``)


def experiment_ids(reader: Reader, names: list[str]) -> list[str]:
    """Ids of the named experiments (all active ones when none is named)."""
    known = reader.experiments()
    if not known:
        raise EmptyStore(f"tracking.uri: the store {reader.uri} has no experiments yet")
    if not names:
        return list(known)
    by_name = {name: i for i, name in known.items()}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UserError(f"--experiment {missing[0]}: no such experiment; the store has: {', '.join(sorted(by_name))}")
    return [by_name[n] for n in names]


def select(reader: Reader, query: Query) -> list[RunRecord]:
    """The top-level runs to show, newest first (or by ``query.sort``), sweep jobs attached as children."""
    statuses = [s.upper() for s in query.statuses]
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise UserError(f"--status {unknown[0]}: not a run status; use one of {', '.join(STATUSES)}")
    runs = reader.runs(experiment_ids(reader, query.experiments), query.filter_string)
    runs = [r for r in runs if (not statuses or r.status in statuses) and _name_matches(r.name, query.name)]
    top = tree(runs)
    if query.last > 0:
        top = top[: query.last]
    fill_best(reader, top)
    if query.sort:
        if top and not any(metric_value(r, query.sort) is not None for run in top for r in (run, *run.children)):
            known = sorted({k for run in top for r in (run, *run.children) for k in r.metrics})
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise ConfigError(f"--sort {query.sort}: no run shown has this metric; they have: {shown or 'no metrics'}")
        sort_by(top, query.sort, query.ascending)
        if query.top > 0:
            top = [r for r in top if metric_value(r, query.sort) is not None][: query.top]
    return top


def _name_matches(name: str, pattern: str | None) -> bool:
    """Glob match (``mnist-*``), or a substring when the pattern has no wildcard; case-insensitive."""
    if not pattern:
        return True
    name, pattern = name.lower(), pattern.lower()
    return fnmatch.fnmatchcase(name, pattern) if any(c in pattern for c in "*?[") else pattern in name


def tree(runs: list[RunRecord]) -> list[RunRecord]:
    """Runs whose parent is listed become its children (by job number); the others stay on top, in order."""
    by_id = {r.run_id: r for r in runs}
    top = []
    for run in runs:
        parent = by_id.get(run.parent_id or "")
        if parent is not None and parent is not run:
            parent.children.append(run)
        else:
            top.append(run)
    for run in runs:
        run.children.sort(key=lambda c: (c.job_num, c.start_ms or 0))
    return top


def fill_best(reader: Reader, top: list[RunRecord]) -> None:
    """Each run's best monitored value (max/min over its history); each sweep's best job marked."""
    flat = [r for parent in top for r in (parent, *parent.children) if not r.is_sweep]
    by_key: dict[str, list[RunRecord]] = {}
    for run in flat:
        key, _ = run.monitor()
        if key:
            by_key.setdefault(key, []).append(run)
    for key, runs in by_key.items():
        extremes = reader.extremes([r.run_id for r in runs], key)
        for run in runs:
            lo_hi = extremes.get(run.run_id)
            if lo_hi:
                run.best = lo_hi[1] if run.monitor()[1] == "max" else lo_hi[0]
    for parent in (r for r in top if r.is_sweep):
        key, mode = parent.monitor()
        best_child = _best_child(parent, mode)
        if best_child is not None:
            best_child.is_best = True
        # The sweep records its best job's value as its own metric; else take the best job's.
        own = parent.metrics.get(key) if key else None
        parent.best = own if own is not None else (best_child.best if best_child else None)


def _best_child(parent: RunRecord, mode: str) -> RunRecord | None:
    named = parent.tags.get(BEST_RUN_TAG)
    for child in parent.children:
        if named and child.run_id == named:
            return child
    best = None
    for child in parent.children:
        if child.status == "FINISHED" and better(child.best, best.best if best else None, mode):
            best = child
    return best


def metric_value(run: RunRecord, key: str) -> float | None:
    """What sorting by ``key`` compares: the best value for the monitored metric, else the last (or a mean)."""
    if key == run.monitor()[0] and run.best is not None:
        return run.best
    value = run.metrics.get(key, run.metrics.get(f"{key}_mean"))
    return None if value is None or math.isnan(value) else value


def sort_by(top: list[RunRecord], key: str, ascending: bool) -> None:
    """Sort runs (and each sweep's jobs) by a metric, largest first unless ``ascending``; runs without it last."""

    def order(runs: list[RunRecord]) -> None:
        present = [r for r in runs if metric_value(r, key) is not None]
        absent = [r for r in runs if metric_value(r, key) is None]
        present.sort(key=lambda r: metric_value(r, key), reverse=not ascending)
        runs[:] = present + absent

    order(top)
    for run in top:
        order(run.children)
