"""Seeds and cross-validation folds as axes of a sweep: jobs that differ only by ``seed`` or ``cv.fold`` are one
configuration, reported as mean ± std (n).

``dlrun -m seed=1,2,3`` (or ``model=mlp,cnn seed=1,2,3``, or ``cv.folds=5``, which sweeps ``cv.fold``): each
configuration gets, for its optimized metric and every ``test/*`` metric of its finished runs, the mean, the
sample standard deviation (n - 1 in the denominator; only from n = 2) and n. The parent run holds them as
metrics ``<name>_mean``, ``<name>_std``, ``<name>_n``: unprefixed for the best configuration (by the mean of the
optimized metric), and prefixed with the configuration (``model-cnn/test/acc_mean``) for every configuration
when there are several. Folds also put each fold's value there: ``<name>_fold0``, ``<name>_fold1``, ...
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlrun.sweeping.table import JobRow

SEED_KEYS = ("seed", "+seed", "++seed")
FOLD_KEYS = ("cv.fold", "+cv.fold", "++cv.fold")
REPLICATE_KEYS = SEED_KEYS + FOLD_KEYS  # repeat a configuration; they are not part of what it is


def _is_replicate(override: str) -> bool:
    return override.split("=", 1)[0] in REPLICATE_KEYS


def fold_of(row: JobRow) -> int | None:
    """The cross-validation fold a job validated on (its ``cv.fold=`` override), None outside cross-validation."""
    for override in row.overrides:
        key, _, value = override.partition("=")
        if key in FOLD_KEYS and value.isdigit():
            return int(value)
    return None


@dataclass
class Stat:
    """Mean, sample standard deviation (None below 2 values) and count of one metric over seeds."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        """The statistics of ``values`` (at least one)."""
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def text(self) -> str:
        """``0.9712 ± 0.0021 (n=3)``."""
        spread = f" ± {self.std:.4f}" if self.std is not None else ""
        return f"{self.mean:.4f}{spread} (n={self.n})"


@dataclass
class SeedGroup:
    """One configuration: the overrides its jobs share (seed and fold excepted), its jobs, and their metrics'
    statistics; ``folds``: each metric's value per cross-validation fold."""

    overrides: list[str]
    rows: list[JobRow]
    stats: dict[str, Stat] = field(default_factory=dict)
    folds: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The configuration's overrides, or ``all`` when the jobs differ only by seed."""
        return " ".join(self.overrides) or "all"


def seed_groups(rows: list[JobRow], common: list[str]) -> list[SeedGroup]:
    """Finished jobs grouped by their overrides without ``seed`` and ``cv.fold``; [] unless some configuration
    ran several seeds or folds."""
    groups: dict[tuple[str, ...], SeedGroup] = {}
    for row in rows:
        if not row.ok:
            continue
        key = tuple(o for o in row.overrides if not _is_replicate(o) and o not in common)
        groups.setdefault(key, SeedGroup(list(key), [])).rows.append(row)
    repeated = any(len({_replicate(r) for r in g.rows}) > 1 for g in groups.values())
    return list(groups.values()) if repeated else []


def _replicate(row: JobRow) -> tuple[str, ...]:
    return tuple(o for o in row.overrides if _is_replicate(o))


def fill_stats(groups: list[SeedGroup], metric: str, metrics_of: Callable[[JobRow], Mapping[str, float]]) -> list[str]:
    """Compute each group's statistics of ``metric`` and of every ``test/*`` metric; the metric names, in order."""
    names = [metric]
    for group in groups:
        values: dict[str, list[float]] = {}
        for row in group.rows:
            found = dict(metrics_of(row))
            if row.value is not None:
                found.setdefault(metric, row.value)
            fold = fold_of(row)
            for name, value in found.items():
                if (name == metric or name.startswith("test/")) and value is not None and math.isfinite(value):
                    values.setdefault(name, []).append(float(value))
                    if fold is not None:
                        group.folds.setdefault(name, {})[fold] = float(value)
                    if name not in names:
                        names.append(name)
        group.stats = {name: Stat.of(v) for name, v in values.items()}
    return [metric] + sorted(n for n in names if n != metric)


def best_group(groups: list[SeedGroup], metric: str, mode: str) -> SeedGroup | None:
    """The configuration with the best mean of ``metric``."""
    scored = [g for g in groups if metric in g.stats]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda g: g.stats[metric].mean)


def cross_validated_best(groups: list[SeedGroup], metric: str, mode: str) -> SeedGroup | None:
    """The configuration with the best mean of ``metric`` over its folds; None unless the jobs were folds."""
    if not any(group.folds for group in groups):
        return None
    return best_group(groups, metric, mode)


def _prefix(label: str) -> str:
    # MLflow metric names take letters, digits, _ - . / and spaces: `model=cnn lr=0.1` -> `model-cnn_lr-0.1`.
    return re.sub(r"[^A-Za-z0-9_./-]", "_", label.replace("=", "-").replace(" ", "_"))


def parent_metrics(groups: list[SeedGroup], metric: str, mode: str) -> dict[str, float]:
    """``<name>_mean/_std/_n`` of the best configuration, and ``<config>/<name>_...`` of each when there are several."""
    out: dict[str, float] = {}

    def put(prefix: str, group: SeedGroup) -> None:
        for name, stat in group.stats.items():
            out[f"{prefix}{name}_mean"] = stat.mean
            out[f"{prefix}{name}_n"] = float(stat.n)
            if stat.std is not None:
                out[f"{prefix}{name}_std"] = stat.std
        for name, by_fold in group.folds.items():
            out.update({f"{prefix}{name}_fold{fold}": value for fold, value in by_fold.items()})

    best = best_group(groups, metric, mode)
    if best is not None:
        put("", best)
    if len(groups) > 1:
        for group in groups:
            put(f"{_prefix(group.label)}/", group)
    return out


def seed_table(groups: list[SeedGroup], names: list[str], metric: str, mode: str) -> Any:
    """A rich Table: one row per configuration, each metric as ``mean ± std (n=...)``, the best in bold green."""
    from rich.table import Table

    best = best_group(groups, metric, mode)
    rows = [r for g in groups for r in g.rows]
    axes = [a for a, keys in (("seeds", SEED_KEYS), ("folds", FOLD_KEYS)) if any(_has(r, keys) for r in rows)]
    table = Table(title=f"over {' and '.join(axes)}: mean ± std (sample), n", title_justify="left")
    table.add_column("configuration", overflow="fold")
    table.add_column(" / ".join(axes), justify="right")
    for name in names:
        table.add_column(f"{name} ({mode})" if name == metric else name, justify="right")
    for group in groups:
        repeats = " ".join("/".join(o.split("=", 1)[1] for o in _replicate(r)) for r in group.rows)
        cells = [group.label, repeats] + [group.stats[n].text() if n in group.stats else "" for n in names]
        table.add_row(*cells, style="bold green" if group is best and len(groups) > 1 else None)
    return table


def _has(row: JobRow, keys: tuple[str, ...]) -> bool:
    return any(o.split("=", 1)[0] in keys for o in row.overrides)


def as_dicts(groups: list[SeedGroup]) -> list[dict[str, Any]]:
    """Plain data for the parent's ``seed_stats.json`` artifact."""
    return [
        {
            "configuration": g.label,
            "jobs": [r.num for r in g.rows],
            "stats": {n: {"mean": s.mean, "std": s.std, "n": s.n} for n, s in g.stats.items()},
            **({"folds": {n: dict(sorted(f.items())) for n, f in g.folds.items()}} if g.folds else {}),
        }
        for g in groups
    ]
