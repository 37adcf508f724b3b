"""The ``dlrun runs`` listing: flat rows (CSV/JSON) and a terminal table that drops columns before lines wrap."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from dlrun.browse.records import RunRecord

# Params that differ between machines or jobs without telling anything about the experiment.
NOISY_PARAMS = ("paths.", "tracking.", "hydra.")
PLACE_SUFFIXES = ("_dir", "_path")  # data.data_dir and the like: where, not what (they differ between machines)
AGGREGATES = ("_mean", "_std", "_n")  # seed aggregation on sweep parents: test/acc_mean, test/acc_std, test/acc_n
NAME_WIDTH = 32
GAP = 2


def flatten_tree(top: list[RunRecord]) -> list[tuple[RunRecord, int]]:
    """Runs in display order with their depth (0: top level, 1: a sweep's job)."""
    return [(r, depth) for parent in top for r, depth in ((parent, 0), *((c, 1) for c in parent.children))]


def test_keys(runs: list[RunRecord]) -> list[str]:
    """``test/*`` metric names of the runs, aggregates (``_mean``/``_std``/``_n``) folded into their base name."""
    keys = set()
    for run in runs:
        for key in run.metrics:
            if key.startswith("test/"):
                keys.add(_base(key))
    return sorted(keys)


def _base(key: str) -> str:
    for suffix in AGGREGATES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def differing_params(runs: list[RunRecord]) -> list[str]:
    """Param keys whose values are not the same for all runs (sweep parents, which log sweep args, left out)."""
    runs = [r for r in runs if not r.is_sweep]
    if len(runs) < 2:
        return []
    shown = {k for r in runs for k in r.params if not k.startswith(NOISY_PARAMS) and not k.endswith(PLACE_SUFFIXES)}
    keys = sorted(shown)
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def monitor_keys(runs: list[RunRecord]) -> list[str]:
    """The distinct monitored metrics of the runs."""
    return sorted({key for key, _ in (r.monitor() for r in runs) if key})


def rows(top: list[RunRecord]) -> list[dict[str, Any]]:
    """One flat dict per run for CSV/JSON: info, monitored metric (best, last), test metrics, differing params."""
    flat = flatten_tree(top)
    runs = [r for r, _ in flat]
    tests = sorted({k for r in runs for k in r.metrics if k.startswith("test/")})
    params = differing_params(runs)
    out = []
    for run, _ in flat:
        key, mode = run.monitor()
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "name": run.name,
            "experiment": run.experiment,
            "status": run.status,
            "start": _iso(run.start_ms),
            "duration_s": _round(run.duration_s()),
            "parent_run_id": run.parent_id or "",
            "sweep_id": run.tags.get("dlrun.sweep_id", ""),
            "best_in_sweep": run.is_best,
            "monitor": key or "",
            "mode": mode if key else "",
            "best": _number(run.best),
            "last": _number(run.metrics.get(key)) if key else None,
        }
        row.update({k: _number(run.metrics.get(k)) for k in tests})
        row.update({k: run.params.get(k) for k in params})
        out.append(row)
    return out


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _iso(ms: int | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ms / 1000)) if ms else ""


# ---- terminal table


@dataclass
class Column:
    """A table column: header, cells, and how readily it is dropped (higher ``drop`` goes first)."""

    header: str
    cells: list[str]
    drop: float
    right: bool = False
    styles: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        """Widest cell or header."""
        return max([len(self.header), *(len(c) for c in self.cells)])


def fmt(value: float | None) -> str:
    """A metric value in at most ~7 characters: 0.9812, 23.45, 1234."""
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _start(ms: int | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(ms / 1000)) if ms else ""


def _test_cell(run: RunRecord, key: str) -> str:
    """The run's value, or for a sweep parent with seed aggregates ``mean±std n=N``."""
    mean = run.metrics.get(f"{key}_mean")
    if mean is not None and key not in run.metrics:
        std, n = run.metrics.get(f"{key}_std"), run.metrics.get(f"{key}_n")
        return fmt(mean) + (f"±{fmt(std)}" if std is not None else "") + (f" n={fmt(n)}" if n is not None else "")
    return fmt(run.metrics.get(key))


STATUS_STYLE = {"FINISHED": "green", "FAILED": "red", "KILLED": "yellow", "RUNNING": "cyan", "PRUNED": "magenta"}


def shown_status(run: RunRecord) -> str:
    """The run's status, with a trial its search's pruner stopped shown as PRUNED (MLflow records it KILLED)."""
    return "PRUNED" if run.status == "KILLED" and "dlrun.pruned" in run.tags else run.status


def columns(top: list[RunRecord]) -> tuple[list[Column], list[str]]:
    """All candidate columns in display order, and legend lines."""
    flat = flatten_tree(top)
    runs = [r for r, _ in flat]
    names = []
    for index, (run, depth) in enumerate(flat):
        prefix = ""
        if depth:
            last = index + 1 == len(flat) or flat[index + 1][1] == 0
            prefix = "└ " if last else "├ "
        mark = " *" if run.is_best else ""
        name = run.name or "-"
        study = run.tags.get("dlrun.study_name")
        if study and study not in name:  # five parents named mnist-search: their studies tell them apart
            name = f"{name} ({study})"
        room = NAME_WIDTH - len(prefix) - len(mark)
        names.append(prefix + (name if len(name) <= room else name[: room - 1] + "…") + mark)
    monitors = monitor_keys(runs)
    one = monitors[0] if len(monitors) == 1 else None
    statuses = [shown_status(r) for r in runs]
    cols = [
        Column("id", [r.short_id for r in runs], 0),
        Column("name", names, 0, styles=["bold" if r.is_best else "" for r in runs]),
        Column("status", statuses, 0, styles=[STATUS_STYLE.get(s, "") for s in statuses]),
        Column("start", [_start(r.start_ms) for r in runs], 9),
        Column("time", [_duration(r.duration_s()) for r in runs], 8, right=True),
    ]
    if monitors and not one:
        cols.append(Column("monitor", [r.monitor()[0] or "" for r in runs], 1.5))
    if monitors:
        cols.append(Column(f"best {one}" if one else "best", [fmt(r.best) for r in runs], 1, right=True))
        cols.append(Column("last", [fmt(r.metrics.get(r.monitor()[0] or "")) for r in runs], 7, right=True))
    # Kept longest: the test metric matching the monitored one (test/acc for val/acc), then what differs.
    tests = sorted(test_keys(runs), key=lambda k: (k.split("/")[-1] not in {m.split("/")[-1] for m in monitors}, k))
    for i, key in enumerate(tests):
        cols.append(Column(key, [_test_cell(r, key) for r in runs], 2 if i == 0 else 5 + i / 100, right=True))
    # Params that vary most (the swept ones) are dropped last; headers are the keys' shortest unique tails.
    params = differing_params(runs)
    spread = {k: len({r.params.get(k) for r in runs if not r.is_sweep}) for k in params}
    headers = short_keys(params)
    for i, key in enumerate(sorted(params, key=lambda k: (-spread[k], len(headers[k]), k))):
        cols.append(Column(headers[key], [_param_cell(r, key) for r in runs], 3 + i / 100))
    legend = []
    if any(r.is_best for r in runs):
        keys = sorted({r.monitor()[0] or "" for r in top if r.is_sweep} - {""})
        legend.append(f"* best job of its sweep ({', '.join(keys) or 'its metric'})")
    if any(f"{k}_mean" in r.metrics for r in runs for k in test_keys(runs)):
        legend.append("mean±std n=N: over the N seeds of a sweep's configuration")
    return cols, legend


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest tail that no other key shares: ``optimizer.lr`` -> ``lr``."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
                break
        short[key] = tail
    return short


def _param_cell(run: RunRecord, key: str) -> str:
    if run.is_sweep:
        return ""
    value = run.params.get(key, "-")
    return value if len(value) <= 24 else value[:23] + "…"


def fit(cols: list[Column], width: int) -> tuple[list[Column], list[Column]]:
    """The columns that fit in ``width`` (dropping the most droppable first), and those dropped."""
    kept = list(cols)
    dropped: list[Column] = []
    while kept and sum(c.width for c in kept) + GAP * (len(kept) - 1) > width:
        victim = max(kept, key=lambda c: c.drop)
        if victim.drop == 0:  # only id, name and status are left: shorten names instead
            name = next(c for c in kept if c.header == "name")
            excess = sum(c.width for c in kept) + GAP * (len(kept) - 1) - width
            name.cells = [
                c if len(c) <= name.width - excess else c[: max(4, name.width - excess - 1)] + "…" for c in name.cells
            ]
            break
        kept.remove(victim)
        dropped.append(victim)
    return kept, dropped


def render(top: list[RunRecord], console: Any, store: str) -> None:
    """Print the table to a rich console, as wide as the console allows."""
    from rich.table import Table

    if not top:
        console.print(f"no runs match in {store}")
        return
    cols, legend = columns(top)
    kept, dropped = fit(cols, console.width)
    table = Table(box=None, pad_edge=False, padding=(0, GAP // 2), header_style="bold", show_edge=False)
    for col in kept:
        table.add_column(col.header, justify="right" if col.right else "left", no_wrap=True, overflow="ellipsis")
    for i in range(len(kept[0].cells)):
        table.add_row(*(_styled(c, i) for c in kept))
    console.print(table)
    if dropped:
        legend.append(
            f"{len(dropped)} more columns with --csv or a wider terminal: {', '.join(c.header for c in dropped)}"
        )
    for line in legend:
        short = line if len(line) <= console.width else line[: console.width - 1] + "…"
        console.print(short, style="dim", highlight=False, no_wrap=True)


def _styled(col: Column, i: int) -> Any:
    from rich.text import Text

    style = col.styles[i] if col.styles else ""
    return Text(col.cells[i], style=style)
