"""Sweeps (``dlrun -m ...``): one MLflow parent run per sweep, one child run per job, a table at the end.

How the pieces meet, whatever the launcher (in-process, joblib workers, submitit/SLURM jobs):
- ``SweepCallback.on_multirun_start`` (main process) creates the parent run and writes ``dlrun_sweep.json``
  into the sweep directory; every job reads it from there (``current_sweep``) to tag its run as a child.
- each job's process writes ``dlrun_job.json`` into its own output directory (``on_job_end``): status,
  returned metric, error, or the earlier run it reused;
- ``on_multirun_end`` (main process) reads those records plus the child runs from MLflow, prints the
  table, logs it on the parent run, closes the parent and fails the command if any job failed.

An Optuna search (dlrun's ``hydra/sweeper=optuna``) keeps one parent run per study, found again by its tag
``dlrun.study`` when the same command continues the study; its table has one row per trial of the study.
Jobs that differ only by ``seed`` are also summarized per configuration (``dlrun.sweeping.seed_stats``).
"""

from __future__ import annotations

import atexit
import json
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlrun._upstream import hydra_job_value
from dlrun.errors import UserError
from dlrun.sweeping import sweep_dir
from dlrun.sweeping.outcomes import JobFailed, JobPruned
from dlrun.sweeping.table import JobRow, best_row, common_overrides, sweep_table, table_text
from dlrun.tracking.identity import CONFIG_HASH_TAG, config_hash, newest_run

SWEEP_FILE = "dlrun_sweep.json"
JOB_FILE = "dlrun_job.json"
SWEEP_ID_TAG = "dlrun.sweep_id"
PARENT_TAG = "mlflow.parentRunId"
JOB_NUM_TAG = "dlrun.job_num"

# Output dirs of jobs in this process that reused an earlier run instead of training: output_dir -> run id.
_reused: dict[str, str] = {}


class SweepFailed(UserError):
    """Some jobs of a sweep failed; the others ran to the end."""


# Set by on_multirun_end for the CLI to raise: Hydra turns exceptions raised in callbacks into warnings.
failure: SweepFailed | None = None


@dataclass
class Sweep:
    """What every job of a sweep needs to know: its id and the parent run (None when tracking is off)."""

    sweep_id: str
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    experiment_id: str | None = None

    def save(self, folder: Path) -> None:
        """Write ``dlrun_sweep.json`` into the sweep directory."""
        folder.mkdir(parents=True, exist_ok=True)
        # Workers sharing a sweep directory write the same file: replace it whole, never half-written.
        partial = folder / f"{SWEEP_FILE}.{uuid.uuid4().hex[:8]}"
        partial.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        partial.replace(folder / SWEEP_FILE)

    @classmethod
    def load(cls, folder: Path) -> Sweep | None:
        """Read ``dlrun_sweep.json`` from the sweep directory, if there."""
        path = folder / SWEEP_FILE
        return cls(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def _is_multirun(hydra_cfg: DictConfig) -> bool:
    from hydra.types import RunMode

    return hydra_cfg.mode == RunMode.MULTIRUN


def current_sweep() -> tuple[Sweep, int] | None:
    """The sweep of the running Hydra job and the job's number; None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if not _is_multirun(hydra_cfg):
        return None
    sweep = Sweep.load(sweep_dir(hydra_cfg))
    return (sweep, int(hydra_cfg.job.num)) if sweep else None


def job_tags(config: dict[str, Any]) -> dict[str, str]:
    """Tags for a job's run: its config hash always; sweep id, job number and parent run inside a sweep."""
    tags = {CONFIG_HASH_TAG: config_hash(config)}
    trial = config.get("trial")
    if isinstance(trial, dict) and trial.get("number") is not None:  # an Optuna trial (keys added by the sweeper)
        from dlrun.sweeping.recover import STUDY_TAG, TRIAL_TAG
        from dlrun.sweeping.study import StudyRef

        tags[STUDY_TAG] = StudyRef(str(trial["storage"]), str(trial["study"])).key
        tags[TRIAL_TAG] = str(trial["number"])
    found = current_sweep()
    if found:
        sweep, num = found
        tags[SWEEP_ID_TAG] = sweep.sweep_id
        tags[JOB_NUM_TAG] = str(num)
        if sweep.parent_run_id:
            tags[PARENT_TAG] = sweep.parent_run_id
    return tags


@dataclass
class Reused:
    """An earlier FINISHED run with the same config, standing in for a sweep job."""

    run_id: str
    value: float | None


def reuse_finished(spec: Any, metric: str) -> Reused | None:
    """In a sweep, the FINISHED run whose config hash equals this job's (the job is then skipped); else None.

    Every rank of a job started by the cluster (SLURM tasks) asks, so that all of them skip or none does.
    """
    from dlrun.tracking.identity import finished_twin
    from dlrun.tracking.run import is_rank_zero

    if spec is None or current_sweep() is None:
        return None
    client, _ = _client(spec.uri, spec.cwd)
    experiment = client.get_experiment_by_name(spec.experiment)
    if experiment is None:
        return None
    twin = finished_twin(client, experiment.experiment_id, spec.tags[CONFIG_HASH_TAG])
    if twin is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    value = twin.data.metrics.get(metric)
    if is_rank_zero():
        _reused[str(HydraConfig.get().runtime.output_dir)] = twin.info.run_id
        shown = f"{metric} {value:.4f}" if value is not None else f"no {metric}"
        print(f"skipped: this exact config already FINISHED in run {twin.info.run_id} ({shown})", flush=True)
    return Reused(twin.info.run_id, value)


def _client(uri: str | None, cwd: Path) -> tuple[Any, str]:
    """An MlflowClient for ``uri`` (resolved like a job's), the store checked and ready."""
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.sqlite import prepare_sqlite
    from dlrun.tracking.store import check_server, resolve_uri

    resolved, _ = resolve_uri(uri, cwd)
    check_server(resolved)
    prepare_sqlite(resolved)
    return MlflowClient(tracking_uri=resolved), resolved


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class SweepCallback(Callback):
    """Hydra callback (``hydra.callbacks.sweep`` in conf/config.yaml) that groups and reports a multirun."""

    def __init__(self) -> None:
        self.sweep: Sweep | None = None
        self._closed = True

    # ---- main process, before any job
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the parent run and publish the sweep's id and parent to the jobs via ``dlrun_sweep.json``."""
        from dlrun.tracking.run import is_rank_zero

        global failure
        if not is_rank_zero():  # a sweep started again by a DDP rank must not open a second parent
            return
        failure = None
        from dlrun.sweeping.sweeper import check_search

        try:
            search = check_search(config)
        except UserError:
            return  # the sweeper, built next, stops with this error: no parent run for a search that cannot start
        sweep = Sweep(sweep_id=uuid.uuid4().hex[:12])
        try:
            if config.tracking.enabled:
                from dlrun.logs import quiet_third_party

                with quiet_third_party():  # a new store's "Creating initial MLflow database tables" lines
                    self._open_parent(config, sweep, search.direction if search is not None else None)
        finally:
            # Even without a parent (store unreachable: each job then fails fast, saying why) the jobs
            # must find the sweep, so that their outcomes reach the table and the exit code.
            sweep.save(sweep_dir(config.hydra))
            self.sweep = sweep

    def _open_parent(self, config: DictConfig, sweep: Sweep, direction: str | None) -> None:
        """Create the parent run, or continue the study's: one parent per study, however many workers start it."""
        import dlrun
        from dlrun.sweeping.study import study_ref
        from dlrun.tracking.run import TrackedRun
        from dlrun.tracking.store import get_or_create_experiment, resolve_uri

        study = study_ref(config)
        cwd = Path(str(config.hydra.runtime.cwd))
        client, uri = _client(config.tracking.uri, cwd)
        choices = config.hydra.runtime.choices
        experiment = config.tracking.experiment or choices.get("data") or "dlrun"
        experiment_id = get_or_create_experiment(client, experiment, resolve_uri(uri, cwd)[1])
        arguments = [str(a) for a in config.hydra.overrides.task]
        name = config.tracking.run_name or choices.get("experiment") or experiment
        tags = {
            SWEEP_ID_TAG: sweep.sweep_id,
            "dlrun.version": dlrun.__version__,
            "dlrun.task": "sweep",
            "dlrun.sweep_args": " ".join(arguments),
            "dlrun.overrides": " ".join(arguments),
            "dlrun.output_dir": str(sweep_dir(config.hydra)),
            "dlrun.launcher": str(choices.get("hydra/launcher")),
            "dlrun.sweeper": str(choices.get("hydra/sweeper")),
            "mlflow.source.name": "dlrun",
            "mlflow.source.type": "LOCAL",
        }

        def create() -> str:
            if study:
                from dlrun.sweeping.recover import STUDY_TAG

                tags[STUDY_TAG] = study.key
            created = client.create_run(experiment_id, run_name=f"{name}-{'search' if study else 'sweep'}", tags=tags)
            TrackedRun(client, created.info.run_id, experiment_id, uri).log_params(sweep_params(config))
            return created.info.run_id

        if study is None:
            run_id, made = create(), True
        else:
            from dlrun.sweeping.study import shared_parent

            def find() -> str | None:
                earlier = study_parent(client, experiment_id, study.key)
                return earlier.info.run_id if earlier is not None else None

            run_id, made = shared_parent(study, str(direction), find, create)
        parent = TrackedRun(client, run_id, experiment_id, uri)
        if not made:  # the same study continued, or searched by another worker: the same parent run
            earlier = client.get_run(run_id)
            sweep.sweep_id = tags[SWEEP_ID_TAG] = earlier.data.tags.get(SWEEP_ID_TAG, sweep.sweep_id)
            client.update_run(run_id, status="RUNNING")
            parent.set_tags(tags)
            # MLflow refuses to change a param: a changed argument (n_trials=40) shows in dlrun.sweep_args only.
            parent.log_params({k: v for k, v in sweep_params(config).items() if k not in earlier.data.params})
        sweep.parent_run_id, sweep.tracking_uri, sweep.experiment_id = parent.run_id, uri, experiment_id
        self._closed = False
        # A sweeper that crashes skips on_multirun_end: do not leave the parent RUNNING forever.
        atexit.register(self._close_if_open)
        again = " (continued)" if not made else ""
        print(f"sweep {sweep.sweep_id}: parent run {parent.run_id}{again} in experiment '{experiment}'", flush=True)

    # ---- the job's own process (main, joblib worker or cluster node)
    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Write the job's outcome to ``dlrun_job.json`` in its output directory (rank 0 of a DDP job only)."""
        from dlrun.tracking.run import is_rank_zero

        if not _is_multirun(config.hydra) or not is_rank_zero():
            return
        sweep = Sweep.load(sweep_dir(config.hydra))
        if sweep is None:
            return
        output_dir = str(config.hydra.runtime.output_dir)
        value = hydra_job_value(job_return)
        status, error, pruned_epoch = "FINISHED", None, None
        if isinstance(value, JobFailed):
            status, error, value = "FAILED", value.error, None
        elif isinstance(value, JobPruned):
            status, pruned_epoch, value = "PRUNED", value.epoch, value.value
        elif isinstance(value, BaseException):  # a task not wrapped by dlrun's CLI raised
            status, error, value = "FAILED", f"{type(value).__name__}: {' '.join(str(value).split())}", None
        reused = _reused.pop(output_dir, None)
        if reused and status == "FINISHED":
            status = "SKIPPED"
        record = {
            "sweep_id": sweep.sweep_id,
            "num": int(config.hydra.job.num),
            # An Optuna trial's +trial.* keys only say which trial it is: its number is the row's.
            "overrides": [str(o) for o in config.hydra.overrides.task if not str(o).startswith("+trial.")],
            "status": status,
            "value": _number(value),
            "error": error,
            "reused_run_id": reused,
            "output_dir": output_dir,
            "pruned_epoch": pruned_epoch,
        }
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / JOB_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")

    # ---- main process, after all jobs
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the table, log it on the parent run, close the parent; set ``failure`` if a job failed.

        A fault in the report itself fails the parent run and the command (Hydra would only log it).
        """
        global failure
        try:
            self._end(config)
        except Exception as err:  # noqa: BLE001 - becomes the command's one-line error
            from dlrun.errors import one_line

            failure = SweepFailed(f"sweep report: {type(err).__name__}: {one_line(str(err))}")
            if self.sweep is not None and self.sweep.parent_run_id and not self._closed:
                from mlflow.tracking import MlflowClient

                client = MlflowClient(self.sweep.tracking_uri)
                client.set_tag(self.sweep.parent_run_id, "dlrun.error", str(failure))
                client.set_terminated(self.sweep.parent_run_id, "FAILED")
                self._closed = True

    def _end(self, config: DictConfig) -> None:
        global failure
        folder, sweep = sweep_dir(config.hydra), self.sweep
        if sweep is None:
            return
        from dlrun.sweeping.study import study_ref

        rows = job_rows(folder, sweep)
        from dlrun.sweeping import optimized_metric, optimized_mode

        metric, mode = str(optimized_metric(config)), optimized_mode(config)
        children: dict[str, Any] = {}
        if sweep.parent_run_id:
            children = child_runs(sweep)
            merge_runs(rows, children, metric)
        failed = [r for r in rows if r.failed]  # this command's jobs: an earlier run's failures are history
        study = study_ref(config)
        if study is not None:
            from dlrun.sweeping.report import study_rows, study_title

            direction = config.hydra.sweeper.get("direction")  # null: the sweeper followed the metric's mode
            mode = ("max" if str(direction).lower().endswith("maximize") else "min") if direction else mode
            shown = study_rows(study, sweep)
            title = study_title(study, shown, failed)
        else:
            shown, title = rows, f"sweep {sweep.sweep_id}: {len(rows)} jobs, {len(failed)} failed"
        table = sweep_table(shown, metric, mode, title)
        from rich.console import Console

        # Logs and pipes get 80 columns by default: too narrow for overrides and run ids.
        console = Console(width=None if sys.stdout.isatty() else 160)
        console.print(table)
        seeds = seed_summary(rows, children, sweep, metric, mode) if study is None else None
        if seeds is not None:
            console.print(seeds[0])
        if sweep.parent_run_id:
            if study is not None:
                from dlrun.sweeping.report import report_study

                report_study(config, study, sweep, shown, metric, mode, folder)  # best trial, plots, best.yaml
            self._report_parent(sweep, shown, table, metric, mode, failed, seeds)
        if failed:
            first = min(failed, key=lambda r: r.num)
            varying = [o for o in first.overrides if o not in common_overrides(rows)]
            failure = SweepFailed(
                f"sweep: {len(failed)} of {len(rows)} jobs failed; first: #{first.num} "
                f"({' '.join(varying)}): {first.error or first.status}"
            )

    def _report_parent(
        self, sweep: Sweep, rows: list[JobRow], table: Any, metric: str, mode: str, failed: list, seeds: Any = None
    ) -> None:
        from mlflow.tracking import MlflowClient

        from dlrun.tracking.run import TrackedRun

        parent = TrackedRun(
            MlflowClient(sweep.tracking_uri), sweep.parent_run_id, sweep.experiment_id, sweep.tracking_uri
        )
        text = table_text(table)
        if seeds is not None:
            from dlrun.sweeping.seed_stats import as_dicts

            seed_table, groups, metrics = seeds
            text += "\n" + table_text(seed_table)
            parent.log_metrics(metrics)
            parent.log_text(json.dumps(as_dicts(groups), indent=2), "seed_stats.json")
        parent.log_text(text, "sweep_table.txt")
        parent.log_text(json.dumps([r.as_dict() for r in rows], indent=2), "sweep_jobs.json")
        best = best_row(rows, mode)
        # Counted over the rows shown (a study's every trial), as the table and trials/* metrics count them.
        tags: dict[str, Any] = {"dlrun.jobs": len(rows), "dlrun.failed_jobs": sum(r.failed for r in rows)}
        if best is not None:
            parent.log_metrics({metric: best.value})
            tags["dlrun.best_run_id"] = best.run_id or best.reused_run_id or ""
            tags["dlrun.best_overrides"] = " ".join(best.overrides)
        if seeds is not None:
            from dlrun.sweeping.seed_stats import cross_validated_best

            found = cross_validated_best(seeds[1], metric, mode)
            if found is not None:  # cross-validation: a configuration is judged by its mean over folds
                parent.log_metrics({metric: found.stats[metric].mean})
                tags["dlrun.best_overrides"] = found.label
        if failed:
            tags["dlrun.error"] = f"{len(failed)} of {len(rows)} jobs failed"
        parent.set_tags(tags)
        parent.terminate("FAILED" if failed else "FINISHED")
        self._closed = True

    def _close_if_open(self) -> None:
        if self._closed or self.sweep is None or not self.sweep.parent_run_id:
            return
        self._closed = True
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.sweep.tracking_uri)
            client.set_tag(self.sweep.parent_run_id, "dlrun.error", "the sweep stopped before all its jobs reported")
            client.set_terminated(self.sweep.parent_run_id, "FAILED")
        except Exception:  # noqa: BLE001, S110 - at exit, best effort: the store may be gone
            pass

    def __getstate__(self) -> dict[str, Any]:
        # Launchers pickle callbacks to their workers; the exit hook stays with the main process.
        return {"sweep": self.sweep, "_closed": True}


def sweep_params(config: DictConfig) -> dict[str, str]:
    """The sweep's arguments as params: ``model: mlp,cnn``; an Optuna search's settings as ``search.*``.

    ``search.<key>``: the distribution trials draw from (the preset's space with the command line on top);
    ``search.sampler``, ``search.pruner``, ``search.storage``, ``search.study``, ``search.direction``.
    """
    params: dict[str, str] = {}
    for override in config.hydra.overrides.task:
        key, _, value = str(override).partition("=")
        params[_param_key(key)] = value
    from dlrun.sweeping.study import study_ref

    ref = study_ref(config)
    if ref is None:
        return params
    from dlrun.sweeping.pruners import pruner_spec
    from dlrun.sweeping.space import search_space

    sweeper = config.hydra.sweeper
    search = OmegaConf.select(config, "hydra.sweeper.params")
    arguments = [str(o) for o in config.hydra.overrides.task]
    space = search_space(OmegaConf.to_container(search) if search else {}, arguments)
    for key, distribution in space.distributions.items():
        params[f"search.{_param_key(key)}"] = repr(distribution)
    sampler = OmegaConf.to_container(sweeper.sampler, resolve=True) if isinstance(sweeper.sampler, DictConfig) else {}
    params["search.sampler"] = json.dumps(sampler, sort_keys=True, default=str)
    pruner = sweeper.pruner
    spec = pruner_spec(OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else pruner)
    params["search.pruner"] = json.dumps(spec, sort_keys=True, default=str)
    params["search.storage"], params["search.study"] = ref.storage, ref.name
    from dlrun.sweeping.sweeper import search_direction

    params["search.direction"] = str(sweeper.get("direction") or search_direction(config))
    return params


def _param_key(key: str) -> str:
    # MLflow keys take letters, digits, _ - . / and spaces: drop Hydra's +/~ prefixes and group slashes stay.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key.lstrip("+~"))


def job_rows(folder: Path, sweep: Sweep) -> list[JobRow]:
    """The job records of this sweep found under its directory, by job number."""
    rows: dict[int, JobRow] = {}
    for path in folder.rglob(JOB_FILE):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("sweep_id") != sweep.sweep_id:
            continue  # left by an earlier sweep into the same directory
        record.pop("sweep_id")
        rows[record["num"]] = JobRow(**record)
    return [rows[n] for n in sorted(rows)]


def child_runs(sweep: Sweep) -> dict[str, Any]:
    """The sweep's child runs in MLflow, keyed by their output directory (tag ``dlrun.output_dir``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sweep.tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string=f"tags.`{PARENT_TAG}` = '{sweep.parent_run_id}'", max_results=5000)
    return {r.data.tags.get("dlrun.output_dir", r.info.run_id): r for r in runs}


def merge_runs(rows: list[JobRow], runs: dict[str, Any], metric: str) -> None:
    """Complete each row from its MLflow run: run id, status (FAILED/KILLED win), metric, error tag."""
    for row in rows:
        run = runs.get(row.output_dir or "")
        if run is None:
            continue
        row.run_id = run.info.run_id
        if run.info.status == "KILLED" and "dlrun.pruned" in run.data.tags:  # stopped by a pruner
            row.status, row.pruned_epoch = "PRUNED", int(run.data.tags["dlrun.pruned"])
        elif run.info.status in ("FAILED", "KILLED"):
            row.status = run.info.status
            row.error = row.error or run.data.tags.get("dlrun.error")
        if row.value is None and row.ok:
            row.value = run.data.metrics.get(metric)


def study_parent(client: Any, experiment_id: str, key: str) -> Any | None:
    """The parent run of an earlier search of the same study (tag ``dlrun.study``), newest first; None if new."""
    from dlrun.sweeping.recover import STUDY_TAG

    return newest_run(client, experiment_id, f"tags.`{STUDY_TAG}` = '{key}' and tags.`dlrun.task` = 'sweep'")


def seed_summary(
    rows: list[JobRow], children: dict[str, Any], sweep: Sweep, metric: str, mode: str
) -> tuple[Any, list, dict[str, float]] | None:
    """Mean ± std over seeds per configuration: (table, groups, parent metrics); None unless seeds were swept."""
    from dlrun.sweeping.seed_stats import fill_stats, parent_metrics, seed_groups, seed_table

    groups = seed_groups(rows, common_overrides(rows))
    if not groups:
        return None
    by_id = {run.info.run_id: run for run in children.values()}

    def metrics_of(row: JobRow) -> dict[str, float]:
        run_id = row.run_id or row.reused_run_id
        if run_id and run_id not in by_id and sweep.tracking_uri:  # a skipped job's earlier run
            from mlflow.tracking import MlflowClient

            by_id[run_id] = MlflowClient(sweep.tracking_uri).get_run(run_id)
        return dict(by_id[run_id].data.metrics) if run_id in by_id else {}

    names = fill_stats(groups, metric, metrics_of)
    return seed_table(groups, names, metric, mode), groups, parent_metrics(groups, metric, mode)
