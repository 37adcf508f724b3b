"""``dlrun runs diff A B``: the config keys that differ, side by side, then the metrics side by side.

Machine and bookkeeping keys (``paths.*``, ``tracking.*``) are left out: they say where, not what.
"""

from __future__ import annotations

import math
from typing import Any

from dlrun.browse.records import RunRecord
from dlrun.browse.table import NOISY_PARAMS, fmt
from dlrun.tracking.capsule import environment_differences

SYSTEM_PREFIX = "system/"  # MLflow's system metrics: a column of machine noise in a diff


def compare(reader: Any, ref_a: str, ref_b: str) -> dict[str, Any]:
    """The two runs' differing params and all their metrics (last values; best of the monitored one)."""
    a = reader.run(reader.resolve(ref_a, "A"))
    b = reader.run(reader.resolve(ref_b, "B"))
    keys = sorted(k for k in set(a.params) | set(b.params) if not k.startswith(NOISY_PARAMS))
    params = [
        {"key": k, "a": a.params.get(k), "b": b.params.get(k)} for k in keys if a.params.get(k) != b.params.get(k)
    ]
    names = sorted(k for k in set(a.metrics) | set(b.metrics) if not k.startswith(SYSTEM_PREFIX))
    metrics = [{"key": k, "a": _number(a.metrics.get(k)), "b": _number(b.metrics.get(k))} for k in names]
    for run, side in ((a, "a"), (b, "b")):
        key, mode = run.monitor()
        lo_hi = reader.extremes([run.run_id], key).get(run.run_id) if key else None
        if lo_hi:
            best = {"key": f"best {key}", "a": None, "b": None}
            found = next((m for m in metrics if m["key"] == best["key"]), None)
            if found is None:
                metrics.insert(0, best)
                found = best
            found[side] = lo_hi[1] if mode == "max" else lo_hi[0]
    return {"a": _head(a), "b": _head(b), "params": params, "metrics": metrics, **capsule_diff(reader, a, b)}


def _capsule(reader: Any, run: RunRecord) -> dict[str, Any]:
    """A run's ``capsule/`` files (code.json, code.diff, environment.json) as read from its artifacts; {} if none."""
    import tempfile
    from pathlib import Path

    from dlrun.browse.run_files import local_root
    from dlrun.tracking.capsule import read_capsule

    local = local_root(run)
    if local is not None:
        return read_capsule(local / "capsule")
    from mlflow.tracking import MlflowClient

    try:
        folder = Path(MlflowClient(reader.uri).download_artifacts(run.run_id, "capsule", tempfile.mkdtemp()))
    except Exception:  # noqa: BLE001 - a run recorded before capsules, or a store without artifacts
        return {}
    return read_capsule(folder)


def _changed_lines(diff: str) -> set[str]:
    """The added and removed lines of a unified diff (headers left out)."""
    return {line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))}


def capsule_diff(reader: Any, a: RunRecord, b: RunRecord) -> dict[str, Any]:
    """How the two runs' code and environment differ: commits, the uncommitted changes only one has, packages."""
    cap_a, cap_b = _capsule(reader, a), _capsule(reader, b)
    if not cap_a or not cap_b:
        return {"code": None, "environment": None}
    code_a, code_b = cap_a.get("code.json", {}), cap_b.get("code.json", {})
    lines_a, lines_b = _changed_lines(cap_a.get("code.diff", "")), _changed_lines(cap_b.get("code.diff", ""))
    code = {
        "commit": {"a": code_a.get("commit"), "b": code_b.get("commit")},
        "only_a": sorted(lines_a - lines_b),
        "only_b": sorted(lines_b - lines_a),
    }
    packages = environment_differences(cap_a.get("environment.json", {}), cap_b.get("environment.json", {}))
    return {"code": code, "environment": packages}


def _head(run: RunRecord) -> dict[str, str]:
    return {"run_id": run.run_id, "name": run.name, "status": run.status, "experiment": run.experiment}


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows for CSV: section (param/metric), key, a, b."""
    return [{"section": "param", **p} for p in result["params"]] + [
        {"section": "metric", **m} for m in result["metrics"]
    ]


def render(result: dict[str, Any], console: Any) -> None:
    """Two side-by-side tables: differing config keys, then metrics."""
    from rich.table import Table

    a, b = result["a"], result["b"]
    head_a, head_b = f"A {a['name']} {a['run_id'][:8]}", f"B {b['name']} {b['run_id'][:8]}"
    if result["params"]:
        table = Table(
            box=None, pad_edge=False, header_style="bold", title_justify="left", title="config keys that differ"
        )
        table.add_column("key", no_wrap=True)
        table.add_column(head_a, overflow="fold")
        table.add_column(head_b, overflow="fold")
        for p in result["params"]:
            table.add_row(p["key"], _show(p["a"]), _show(p["b"]))
        console.print(table)
    else:
        console.print("config: the same in both runs")
    console.print()
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left", title="metrics (last values)")
    table.add_column("metric", no_wrap=True)
    table.add_column(head_a, justify="right")
    table.add_column(head_b, justify="right")
    for m in result["metrics"]:
        table.add_row(m["key"], fmt(m["a"]), fmt(m["b"]))
    console.print(table)
    _render_capsule(result, console)


def _render_capsule(result: dict[str, Any], console: Any) -> None:
    code, packages = result.get("code"), result.get("environment")
    console.print()
    if code is None:
        console.print("code and environment: not recorded for both runs (capsule/ artifacts)")
        return
    commits = code["commit"]
    if commits["a"] != commits["b"]:
        console.print(f"code: commit A {str(commits['a'])[:12]}, B {str(commits['b'])[:12]}")
    if code["only_a"] or code["only_b"]:
        console.print("uncommitted changes that differ (lines of capsule/code.diff):", markup=False)
        for side, lines in (("A", code["only_a"]), ("B", code["only_b"])):
            for line in lines[:20]:
                console.print(f"  {side} {line}", markup=False, highlight=False)
            if len(lines) > 20:
                console.print(f"  {side} ... {len(lines) - 20} more")
    elif commits["a"] == commits["b"]:
        console.print(f"code: the same (commit {str(commits['a'])[:12]}, same uncommitted changes)")
    if packages:
        console.print("environment that differs: " + ", ".join(f"{p['key']} {p['a']} -> {p['b']}" for p in packages))
    else:
        console.print("environment: the same packages and versions")


def _show(value: str | None) -> str:
    return "(not set)" if value is None else value
