"""``dlrun runs show RUN``: one run's config, metrics, tags, artifacts, output folder, and how to go on from it."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from dlrun.browse.records import SHORT_ID, RunRecord, guess_mode
from dlrun.browse.run_files import list_artifacts, read_text
from dlrun.browse.table import fmt
from dlrun.tracking.run_ids import AmbiguousRunId


def details(reader: Any, ref: str, uri_arg: str | None) -> dict[str, Any]:
    """Everything ``show`` prints, as plain data (also what ``--json`` writes)."""
    run = reader.run(reader.resolve(ref, "run"))
    key, mode = run.monitor()
    metrics = []
    for name in sorted(run.metrics):
        direction = mode if name == key else guess_mode(name)
        lo_hi = reader.extremes([run.run_id], name).get(run.run_id)
        best = None if lo_hi is None else (lo_hi[1] if direction == "max" else lo_hi[0])
        metrics.append({"metric": name, "last": _number(run.metrics[name]), "best": best, "mode": direction})
    children = [r for r in reader.runs([run.experiment_id]) if r.parent_id == run.run_id]
    children.sort(key=lambda r: r.job_num)
    config = read_text(reader, run, "config.yaml")
    artifacts = list_artifacts(reader, run)
    capsule = capsule_summary(reader, run, artifacts)
    return {
        "run_id": run.run_id,
        "name": run.name,
        "experiment": run.experiment,
        "status": run.status,
        "start": _when(run.start_ms),
        "end": _when(run.end_ms),
        "duration_s": run.duration_s(),
        "monitor": key,
        "mode": mode,
        "output_dir": run.tags.get("dlrun.output_dir", ""),
        "error": run.tags.get("dlrun.error", ""),
        "parent_run_id": run.parent_id or "",
        "config": config if config is not None else _params_yaml(run.params),
        "metrics": metrics,
        "tags": dict(sorted(run.tags.items())),
        "datasets": reader.datasets(run.run_id),
        "artifacts": [{"path": p, "bytes": s} for p, s in artifacts],
        "models": [{**m, "uri": f"models:/{m['model_id']}"} for m in reader.logged_models(run.run_id)],
        "capsule": capsule,
        "children": [{"run_id": c.run_id, "name": c.name, "status": c.status} for c in children],
        "commands": commands(reader, run, uri_arg, [p for p, _ in artifacts], capsule is not None),
    }


def capsule_summary(reader: Any, run: RunRecord, artifacts: list[tuple[str, int | None]]) -> dict[str, Any] | None:
    """What the run's ``capsule/`` holds: its files, the code's digest and commit, dirty or not, the environment."""
    import json

    text = read_text(reader, run, "capsule/code.json")
    if text is None:
        return None
    code = json.loads(text)
    environment = json.loads(read_text(reader, run, "capsule/environment.json") or "{}")
    torch = environment.get("torch") or {}
    diff = read_text(reader, run, "capsule/code.diff") or ""
    return {
        "files": [{"path": p, "bytes": size} for p, size in artifacts if p.startswith("capsule/")],
        "digest": run.tags.get("dlrun.code_digest", ""),
        "kind": code.get("kind"),
        "commit": code.get("commit"),
        "branch": code.get("branch"),
        "remote": code.get("remote"),
        "dirty": bool(code.get("dirty")),
        "changed_files": [line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git a/")],
        "untracked_files": code.get("untracked_files", []),
        "left_out": code.get("left_out", []),
        "capped": bool(code.get("capped")),
        "python": environment.get("python"),
        "torch": torch.get("version"),
        "cuda": torch.get("cuda"),
        "devices": torch.get("devices", []),
        "threads": torch.get("threads"),
        "packages": len(environment.get("distributions", {})),
        "env": environment.get("env", {}),
    }


def commands(
    reader: Any, run: RunRecord, uri_arg: str | None, artifacts: list[str], capsule: bool = False
) -> dict[str, str]:
    """The exact command lines to evaluate, predict with, resume and rerun the run (or rerun a sweep).

    ``ckpt=RUN`` needs a logged checkpoint (logged when training ends); a run stopped earlier is
    evaluated from its local ``last.ckpt``, and resumed only while that file exists.
    """
    store = f" tracking.uri={uri_arg}" if uri_arg else ""
    if run.is_sweep or run.tags.get("dlrun.task") == "sweep":
        args = run.tags.get("dlrun.sweep_args", "")
        return {"rerun": f"dlrun -m {args}{store}".strip()} if args else {}
    if run.tags.get("dlrun.task", "train") != "train":
        return {}
    ref = short_ref(reader, run.run_id)
    last = Path(run.tags.get("dlrun.output_dir", "/nonexistent")) / "checkpoints" / "last.ckpt"
    logged = any(a.startswith("checkpoints/") and a.endswith(".ckpt") for a in artifacts)
    ckpt = ref if logged else (str(last) if last.is_file() else None)
    found: dict[str, str] = {}
    if ckpt:
        # Text objectives translate (or continue) lines read from a file; classifiers predict the test split.
        text = not run.params.get("objective._target_", "").endswith("ClassificationModule")
        predict_input = " input=FILE" if text and "objective._target_" in run.params else ""
        found["evaluate"] = f"dlrun task=eval ckpt={ckpt}{store}"
        found["predict"] = f"dlrun task=predict ckpt={ckpt}{predict_input}{store}"
    if last.is_file():
        epochs = run.params.get("trainer.max_epochs", "its")
        more = f" trainer.max_epochs=N  # N > {epochs}" if run.status == "FINISHED" else ""
        found["resume"] = f"dlrun resume={ref}{store}{more}"
    if capsule:
        found["rerun"] = f"dlrun rerun {ref}{' --tracking-uri ' + uri_arg if uri_arg else ''} --check"
    return found


def short_ref(reader: Any, run_id: str) -> str:
    """The run's first 8 digits when no other run starts with them, else its full id."""
    try:
        return run_id[:SHORT_ID] if reader.resolve(run_id[:SHORT_ID]) == run_id else run_id
    except AmbiguousRunId:
        return run_id


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""


def _params_yaml(params: dict[str, str]) -> str:
    """Flattened params as YAML lines, for runs without ``config.yaml``."""
    return "".join(f"{k}: {v}\n" for k, v in sorted(params.items()))


def render(info: dict[str, Any], console: Any) -> None:
    """Print the details in sections."""
    from rich.markup import escape

    head = (
        f"[bold]{escape(info['name'])}[/]  {info['run_id']}  {info['status']}  experiment {escape(info['experiment'])}"
    )
    console.print(head, highlight=False)
    duration = f" ({info['duration_s']:.0f} s)" if info["duration_s"] is not None else ""
    console.print(f"started {info['start']}, ended {info['end'] or '-'}{duration}", highlight=False)
    for label, key in (("output dir", "output_dir"), ("sweep parent", "parent_run_id"), ("error", "error")):
        if info[key]:
            console.print(f"{label}: {escape(str(info[key]))}", highlight=False)
    _section(console, "config")
    console.print(escape(info["config"].rstrip()), highlight=False, soft_wrap=True)
    _section(
        console,
        "metrics (last, best)" + (f"; monitored: {info['monitor']} ({info['mode']})" if info["monitor"] else ""),
    )
    width = max([len(m["metric"]) for m in info["metrics"]] + [6])
    for m in info["metrics"]:
        star = "  <- monitored" if m["metric"] == info["monitor"] else ""
        console.print(f"  {m['metric']:<{width}}  {fmt(m['last']):>9}  {fmt(m['best']):>9}{star}", highlight=False)
    if info["datasets"]:
        _section(console, "datasets")
        for d in info["datasets"]:
            console.print(
                f"  {d['context'] or '-'}: {d['name']} ({d['digest']}) {escape(d['source'])}",
                highlight=False,
                soft_wrap=True,
            )
    _section(console, "tags")
    for k, v in info["tags"].items():
        text = " ".join(str(v).split())
        console.print(
            f"  {k}: {escape(text if len(text) <= 200 else text[:199] + '…')}", highlight=False, soft_wrap=True
        )
    _section(console, f"artifacts ({len(info['artifacts'])})")
    for a in info["artifacts"]:
        size = f"{a['bytes'] / 1024:.0f} KiB" if a["bytes"] is not None else ""
        console.print(f"  {escape(a['path'])}  {size}", highlight=False)
    for m in info["models"]:
        _section(console, f"logged model {m['name']} ({m['status']})")
        console.print(f"  {m['uri']}  (also runs:/{info['run_id']}/{m['name']})", highlight=False, soft_wrap=True)
        console.print(f"  {escape(m['location'])}", highlight=False, soft_wrap=True)
    if info["capsule"]:
        _render_capsule(info["capsule"], console)
    if info["children"]:
        _section(console, f"sweep jobs ({len(info['children'])})")
        for c in info["children"]:
            console.print(f"  {c['run_id'][:SHORT_ID]}  {escape(c['name'])}  {c['status']}", highlight=False)
    if info["commands"]:
        _section(console, "go on from it")
        for label, line in info["commands"].items():
            console.print(f"  {label + ':':<10} {escape(line)}", highlight=False, soft_wrap=True)


def _render_capsule(capsule: dict[str, Any], console: Any) -> None:
    """The capsule: its files, where the code came from, dirty or not, and the environment in one line."""
    from rich.markup import escape

    _section(console, "capsule (what it takes to run it again)")
    files = ", ".join(f"{Path(f['path']).name} {(f['bytes'] or 0) / 1024:.1f} KiB" for f in capsule["files"])
    console.print(f"  files    {files}", highlight=False)
    if capsule["kind"] == "git":
        where = f"branch {capsule['branch']}" + (f", remote {capsule['remote']}" if capsule["remote"] else "")
        console.print(f"  code     git commit {capsule['commit']} ({escape(where)})", highlight=False, soft_wrap=True)
        changed, new = capsule["changed_files"], capsule["untracked_files"]
        count = f"{len(changed)} file{'s' if len(changed) != 1 else ''}"
        state = f"dirty: {count} changed or new ({', '.join(changed[:6])})" if capsule["dirty"] else "clean"
        console.print(f"  state    {escape(state)}", highlight=False, soft_wrap=True)
        if new:
            console.print(f"  new      untracked files in the diff: {escape(', '.join(new[:6]))}", highlight=False)
    else:
        console.print("  code     no git: an archive of the folder's Python and YAML files", highlight=False)
    for label, key in (("left out", "left_out"), ("capped", "capped")):
        if capsule[key]:
            console.print(f"  {label:<8} {escape(str(capsule[key]))}", highlight=False)
    console.print(f"  digest   {capsule['digest']}", highlight=False)
    devices = ", ".join(capsule["devices"]) or "no GPU"
    env = "; " + " ".join(f"${k}={v}" for k, v in capsule["env"].items()) if capsule["env"] else ""
    console.print(
        f"  env      python {capsule['python']}, torch {capsule['torch']} (CUDA {capsule['cuda'] or '-'}, {devices}), "
        f"{capsule['threads']} threads, {capsule['packages']} packages{env}",
        highlight=False,
        soft_wrap=True,
    )


def _section(console: Any, title: str) -> None:
    console.print(f"\n[bold]{title}[/]", highlight=False)
