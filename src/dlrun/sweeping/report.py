"""What an Optuna search learned, at the end of each run of its command: the table of every trial of the study,
and on the parent run the best trial (value, params, run id), Optuna's plots (PNG) and ``best.yaml``."""

from __future__ import annotations

import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from dlrun.sweeping.recover import TRIAL_TAG, trial_runs
from dlrun.sweeping.study import ERROR_ATTR, RUN_ATTR, UNUSED_ATTR, StudyRef, load_study
from dlrun.sweeping.table import JobRow, best_row

# Groups a rerun does not repeat: the machine's places, and the search itself.
NOT_RERUN = ("tracking", "paths", "hparams_search", "experiment")


def rerun_groups(config: DictConfig) -> list[str]:
    """Every config group whose choice a rerun must repeat (any group, the user's too), minus those not built."""
    from dlrun.config.build import unbuilt_groups

    choices = config.hydra.runtime.choices
    skip = {*NOT_RERUN, *unbuilt_groups(config)}
    return [g for g in choices if "/" not in g and not g.startswith("hydra") and g not in skip and choices[g]]


def _runs_by_trial(ref: StudyRef, tracking_uri: str | None) -> dict[str, Any]:
    if not tracking_uri:
        return {}
    from mlflow.tracking import MlflowClient

    runs = trial_runs(MlflowClient(tracking_uri), ref)
    # Oldest first, so that a trial number's newest run wins.
    return {r.data.tags[TRIAL_TAG]: r for r in sorted(runs, key=lambda r: r.info.start_time or 0)}


def study_rows(ref: StudyRef, sweep: Any) -> list[JobRow]:
    """One row per trial of the study (all runs of the command): params, COMPLETE/PRUNED/FAIL, value, run."""
    study = load_study(ref)
    runs = _runs_by_trial(ref, sweep.tracking_uri if sweep.parent_run_id else None)
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if UNUSED_ATTR in trial.user_attrs:  # asked by a worker and given back unrun: nothing to show
            continue
        run = runs.get(str(trial.number))
        value = trial.value
        if value is None and trial.intermediate_values:  # PRUNED: its last reported value
            value = trial.intermediate_values[max(trial.intermediate_values)]
        pruned = run.data.tags.get("dlrun.pruned") if run is not None else None
        rows.append(
            JobRow(
                num=trial.number,
                overrides=[f"{k}={v}" for k, v in trial.params.items()],
                status=trial.state.name,
                value=value,
                run_id=run.info.run_id if run is not None else trial.user_attrs.get(RUN_ATTR),
                # A trial failed for its stopped worker by another has the reason on its run only.
                error=trial.user_attrs.get(ERROR_ATTR) or (run.data.tags.get("dlrun.error") if run else None),
                output_dir=run.data.tags.get("dlrun.output_dir") if run is not None else None,
                pruned_epoch=int(pruned) if pruned else None,
            )
        )
    return rows


def study_title(ref: StudyRef, rows: list[JobRow], failed: list[JobRow]) -> str:
    """``study NAME: 7 trials: 4 COMPLETE, 2 PRUNED, 1 FAIL`` (and this run's failures)."""
    counts = {s: sum(r.status == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "RUNNING")
    tail = f"; {len(failed)} failed in this run" if failed else ""
    return f"study {ref.name}: {len(rows)} trials: {shown}{tail}"


def rerun_overrides(config: DictConfig, best: JobRow) -> list[str]:
    """The command line that reruns the best trial: group choices, the search's fixed overrides, its params."""
    choices, groups = config.hydra.runtime.choices, rerun_groups(config)
    keep = [f"{g}={choices[g]}" for g in groups]
    for override in config.hydra.overrides.task:
        text = str(override)
        key = text.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra") or key in (*NOT_RERUN, *choices) or key == "trial":
            continue
        if key.startswith("cv."):  # cross-validation chose the configuration: a rerun trains it on the usual split
            continue
        if key not in {o.split("=", 1)[0] for o in best.overrides}:
            keep.append(text)
    return keep + best.overrides


def best_preset(overrides: list[str], header: list[str], groups: Collection[str] | None = None) -> str:
    """``best.yaml``: a preset (``# @package _global_``) holding ``overrides``, for ``dlrun experiment=best``.

    ``groups``: the config groups among the overrides' keys (default: dlrun's own groups); their choices go
    into the preset's defaults list.
    """
    if groups is None:
        from dlrun.config.search_path import shipped_dir

        groups = [p.name for p in shipped_dir("conf").iterdir() if p.is_dir() and p.name != "hydra"]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    defaults: list[Any] = []
    values: dict[str, Any] = {}
    for parsed in OverridesParser.create().parse_overrides(overrides):
        key = parsed.key_or_group
        if parsed.is_delete():
            continue
        if key == "experiment":  # a preset cannot choose another preset: the header's command line does
            continue
        if key.startswith(("tracking.uri", "paths.")):  # this machine's places, not the experiment
            continue
        if key in groups:
            defaults.append({f"override /{key}": parsed.value()})
            continue
        node = values
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = parsed.value()
    body = yaml.safe_dump({"defaults": defaults, **values} if defaults else values, sort_keys=False)
    return "# @package _global_\n" + "".join(f"# {line}\n" for line in header) + body


def _quoted(override: str) -> str:
    return f"'{override}'" if any(c in override for c in "[]{}() ,*$") else override


def save_plots(study: Any, folder: Path) -> list[Path]:
    """Optuna's optimization history, parameter importances, parallel coordinates and intermediate values as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    evaluator = None
    try:
        import sklearn  # noqa: F401 - fANOVA, Optuna's default, needs it
    except ImportError:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    makers = {
        "optimization_history": lambda: plots.plot_optimization_history(study),
        "param_importances": lambda: plots.plot_param_importances(study, evaluator=evaluator),
        "parallel_coordinate": lambda: plots.plot_parallel_coordinate(study),
        "intermediate_values": lambda: plots.plot_intermediate_values(study),
    }
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" notes and too-few-trials warnings
                axes = make()
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(9, 5.5)
            figure.tight_layout()
            figure.savefig(folder / f"{name}.png", dpi=100)
            plt.close(figure)
            saved.append(folder / f"{name}.png")
        except Exception:  # noqa: BLE001, S112 - e.g. importances of fewer than two finished trials: no such plot yet
            plt.close("all")
            continue
    return saved


def report_study(
    config: DictConfig, ref: StudyRef, sweep: Any, rows: list[JobRow], metric: str, mode: str, folder: Path
) -> None:
    """On the search's parent run: trial counts, the best trial (value, params, run id), plots and ``best.yaml``
    (the files also in ``folder``, the sweep directory)."""
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.run import TrackedRun

    client = MlflowClient(sweep.tracking_uri)
    parent = TrackedRun(client, sweep.parent_run_id, sweep.experiment_id, sweep.tracking_uri)
    if "dlrun.error" in client.get_run(parent.run_id).data.tags:  # left by an earlier run of the command
        client.delete_tag(parent.run_id, "dlrun.error")
    counts = {s: sum(r.status == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    parent.log_metrics({f"trials/{s.lower()}": float(n) for s, n in counts.items()})
    tags: dict[str, Any] = {"dlrun.study_storage": ref.storage, "dlrun.study_name": ref.name}
    best = best_row(rows, mode)
    if best is not None:
        tags.update({"dlrun.best_trial": best.num, f"dlrun.best.{metric}": best.value})
        tags.update({f"dlrun.best.{o.split('=', 1)[0]}": o.split("=", 1)[1] for o in best.overrides})
        command = rerun_overrides(config, best)
        tags["dlrun.best_command"] = "dlrun " + " ".join(_quoted(o) for o in command)
        header = [
            f"Best trial {best.num} of study {ref.name!r}: {metric} {best.value:.6g} (run {best.run_id}).",
            "Rerun it: copy this file to ./experiments/best.yaml, then `dlrun experiment=best`; or:",
            f"  {tags['dlrun.best_command']}",
        ]
        path = folder / "best.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(best_preset(command, header, rerun_groups(config)), encoding="utf-8")
        parent.log_artifact(path)
    parent.set_tags(tags)
    for png in save_plots(load_study(ref), folder / "optuna_plots"):
        parent.log_artifact(png, "plots/optuna")
