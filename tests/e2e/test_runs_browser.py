"""`dlrun runs` and `dlrun ui` on a real store of real tiny runs: two plain runs differing in two keys,
a two-job grid sweep, a failed run and a run killed by SIGTERM, built once for the module.

Also: run-id prefixes (here and for `task=eval ckpt=`), dataset inputs, system metrics, and the
direct SQLite reader agreeing with MLflow's client on the same store."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import MNIST, all_runs, dlrun, dlrun_env, dlrun_many, dlrun_start

LIMITS = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=500",
    "model.hidden_sizes=[64]",
    "tracking.log_model=false",
    "callbacks.plots=false",
]


class Store:
    """The module's store: its URI, folder, and the runs by role."""

    def __init__(self, root: Path, uri: str) -> None:
        self.root, self.uri = root, uri
        runs = all_runs(uri)
        self.runs = {r.info.run_id: r for r in runs}
        named = {r.info.run_name: r for r in runs}
        self.base, self.wide = named["base"], named["wide"]
        self.failed, self.killed = named["broken"], named["stopped"]
        self.parent = next(r for r in runs if r.data.tags.get("dlrun.task") == "sweep")
        self.jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == self.parent.info.run_id]

    def runs_cmd(self, *args: str, columns: int = 250, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """``dlrun runs ARGS --tracking-uri URI`` with a terminal of ``columns``."""
        return run_dlrun(["runs", *args, "--tracking-uri", self.uri], cwd or self.root, {"COLUMNS": str(columns)})


def run_dlrun(args: list[str], cwd: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m dlrun ARGS`` (no Lightning here: these commands are fast)."""
    return subprocess.run(
        [sys.executable, "-m", "dlrun", *args],
        check=False,
        cwd=cwd,
        env=dlrun_env(extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for_training(proc: subprocess.Popen) -> None:
    """Read the process's output until its first epoch line (its run is RUNNING then); fail if it exits first."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch "):
            return
    raise AssertionError(f"the run to kill exited ({proc.wait()}) before training:\n{''.join(seen[-30:])}")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Six real runs (and a sweep parent) in one SQLite store, built once: the killed run and the sweep are
    ``dlrun`` processes; the two plain runs and the failing one run in this process (``dlrun_in_process``)."""
    root = tmp_path_factory.mktemp("runs_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    common = [*LIMITS, f"tracking.uri={uri}"]
    # The killed run trains long enough to be caught RUNNING; the sweep runs beside it.
    killed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dlrun",
            *common,
            "trainer.max_epochs=200",
            "trainer.limit_train_batches=20",
            "tracking.run_name=stopped",
            "callbacks.progress_every_n_steps=0",
        ],
        cwd=root,
        env=dlrun_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    nowhere = [f"paths.data_dir={root / 'nowhere'}", "data.download=false"]
    jobs = {
        "base": ([*common, "tracking.run_name=base"], root),
        "wide": ([*common, "tracking.run_name=wide", "optimizer.lr=0.003", "model.dropout=0.1"], root),
        "sweep": (["-m", *common, "optimizer.lr=0.001,0.002"], root),
        # Fails inside its run (config errors stop before one opens): no MNIST where it looks, download off.
        "broken": ([*common, "tracking.run_name=broken", *nowhere], root),
    }
    sweep = dlrun_start({"sweep": jobs.pop("sweep")})["sweep"]  # a command only, beside the long one
    try:
        wait_for_training(killed)
        killed.send_signal(signal.SIGTERM)
        out, _ = killed.communicate(timeout=120)
        assert killed.returncode == 128 + signal.SIGTERM, out[-3000:]
    finally:
        if killed.poll() is None:
            killed.kill()
    results = {**dlrun_many(jobs, in_process=set(jobs)), "sweep": sweep.result()}  # the plain runs in this process
    for name in ("base", "wide", "sweep"):
        assert results[name].returncode == 0, results[name].describe()
    assert results["broken"].returncode != 0, results["broken"].describe()
    return Store(root, uri)


def short(run) -> str:
    return run.info.run_id[:8]


def fmt_value(value: float) -> str:
    """As the table writes metric values."""
    from dlrun.browse.table import fmt

    return fmt(value)


# ---- the listing


def test_store_has_each_kind_of_run(store: Store) -> None:
    assert store.failed.info.status == "FAILED"
    assert store.killed.info.status == "KILLED"
    assert len(store.jobs) == 2 and all(j.info.status == "FINISHED" for j in store.jobs)


def test_table_shows_runs_sweep_tree_best_and_test_metrics(store: Store) -> None:
    out = store.runs_cmd()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0].split()
    # Differing params are headed by their shortest unique tail (optimizer.lr -> lr).
    for column in ("id", "name", "status", "start", "time", "best", "val/acc", "last", "test/acc", "lr", "dropout"):
        assert column in header, lines[0]
    by_id = {line.split()[0]: line for line in lines[1:] if line.strip()}
    for run in (store.base, store.wide, store.failed, store.killed, store.parent, *store.jobs):
        assert short(run) in by_id, f"{short(run)} missing:\n{out.stdout}"
        assert run.info.status in by_id[short(run)]
    # test/acc as recorded, in the run's row.
    assert fmt_value(store.base.data.metrics["test/acc"]) in by_id[short(store.base)]
    # The two jobs come right under their parent, drawn as a tree, the best one (the sweep's tag) marked.
    ids = [line.split()[0] for line in lines[1:] if line.strip()]
    at = ids.index(short(store.parent))
    assert set(ids[at + 1 : at + 3]) == {short(j) for j in store.jobs}
    assert by_id[ids[at + 1]].split()[1] == "├" and by_id[ids[at + 2]].split()[1] == "└"
    best = store.parent.data.tags["dlrun.best_run_id"][:8]
    assert "*" in by_id[best].split(), by_id[best]
    other = next(short(j) for j in store.jobs if short(j) != best)
    assert "*" not in by_id[other].split()
    # best val/acc is the max of the run's history.
    from mlflow.tracking import MlflowClient

    history = MlflowClient(store.uri).get_metric_history(store.wide.info.run_id, "val/acc")
    assert len(history) == 2
    assert fmt_value(max(m.value for m in history)) in by_id[short(store.wide)]


def test_table_fits_80_columns_by_dropping_columns(store: Store) -> None:
    out = store.runs_cmd(columns=80)
    assert out.returncode == 0, out.stderr
    assert all(len(line) <= 80 for line in out.stdout.splitlines()), out.stdout
    assert "id" in out.stdout.splitlines()[0] and "more columns with --csv" in out.stdout
    assert short(store.killed) in out.stdout


def test_filters_status_name_mlflow_syntax_last_and_sort(store: Store) -> None:
    failed = store.runs_cmd("--status", "failed", "--csv")
    assert [r["run_id"] for r in csv.DictReader(io.StringIO(failed.stdout))] == [store.failed.info.run_id]

    # FINISHED filters like every other status: no FAILED or KILLED run comes through.
    finished = store.runs_cmd("--status", "FINISHED", "--csv")
    rows = list(csv.DictReader(io.StringIO(finished.stdout)))
    assert rows and {r["status"] for r in rows} == {"FINISHED"}
    expected_finished = {r.info.run_id for r in store.runs.values() if r.info.status == "FINISHED"}
    assert {r["run_id"] for r in rows} == expected_finished
    assert store.failed.info.run_id not in {r["run_id"] for r in rows}
    killed = store.runs_cmd("--status", "killed", "--csv")
    assert [r["run_id"] for r in csv.DictReader(io.StringIO(killed.stdout))] == [store.killed.info.run_id]

    named = store.runs_cmd("--name", "wid*", "--csv")
    assert [r["name"] for r in csv.DictReader(io.StringIO(named.stdout))] == ["wide"]

    cut = sorted(r.data.metrics["test/acc"] for r in (store.base, store.wide, *store.jobs))[1]
    expected = {r.info.run_id for r in store.runs.values() if r.data.metrics.get("test/acc", -1) > cut}
    filtered = store.runs_cmd("--filter", f"metrics.`test/acc` > {cut}", "--csv")
    assert filtered.returncode == 0, filtered.stderr
    assert {r["run_id"] for r in csv.DictReader(io.StringIO(filtered.stdout))} == expected

    last = store.runs_cmd("--last", "1", "--csv")
    newest = max(
        (r for r in store.runs.values() if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time
    )
    rows = list(csv.DictReader(io.StringIO(last.stdout)))
    assert rows[0]["run_id"] == newest.info.run_id
    assert len(rows) == 1 + (len(store.jobs) if newest.info.run_id == store.parent.info.run_id else 0)

    ordered = store.runs_cmd("--sort", "test/acc", "--status", "FINISHED", "--csv")
    top = [r for r in csv.DictReader(io.StringIO(ordered.stdout)) if not r["parent_run_id"] and r["test/acc"]]
    values = [float(r["test/acc"]) for r in top]
    assert values == sorted(values, reverse=True) and len(values) >= 2

    negative = store.runs_cmd("--last", "-1")
    assert negative.returncode == 2 and negative.stderr.strip() == "dlrun: error: --last -1: must be >= 0 (0: all runs)"

    bad = store.runs_cmd("--experiment", "nope")
    assert bad.returncode != 0 and bad.stderr.startswith("dlrun: error: --experiment nope: no such experiment")
    assert len(bad.stderr.splitlines()) == 1


def test_csv_and_json_parse_back_with_the_stored_values(store: Store) -> None:
    import pandas as pd

    out = store.runs_cmd("--csv", "--last", "0")
    frame = pd.read_csv(io.StringIO(out.stdout))
    assert set(frame["run_id"]) == set(store.runs)
    row = frame.set_index("run_id").loc[store.base.info.run_id]
    assert row["test/acc"] == pytest.approx(store.base.data.metrics["test/acc"])
    assert row["status"] == "FINISHED" and row["monitor"] == "val/acc"
    jobs = frame[frame["parent_run_id"] == store.parent.info.run_id]
    assert len(jobs) == 2 and jobs["best_in_sweep"].sum() == 1

    as_json = json.loads(store.runs_cmd("--json", "--last", "0").stdout)
    assert {r["run_id"] for r in as_json} == set(store.runs)
    killed = next(r for r in as_json if r["run_id"] == store.killed.info.run_id)
    assert killed["status"] == "KILLED"


# ---- show, diff, plot


def test_show_by_prefix_has_config_metrics_tags_and_commands(store: Store) -> None:
    prefix = short(store.wide)
    out = store.runs_cmd("show", prefix)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert store.wide.info.run_id in text and "lr: 0.003" in text and "dropout: 0.1" in text
    assert "config.yaml" in text and store.wide.data.tags["dlrun.output_dir"] in text
    assert f"dlrun task=eval ckpt={prefix}" in text and f"dlrun resume={prefix}" in text
    info = json.loads(store.runs_cmd("show", prefix, "--json").stdout)
    metrics = {m["metric"]: m for m in info["metrics"]}
    assert metrics["test/acc"]["last"] == pytest.approx(store.wide.data.metrics["test/acc"])
    assert info["monitor"] == "val/acc"
    assert info["commands"]["predict"] == f"dlrun task=predict ckpt={prefix} tracking.uri={store.uri}"
    assert any(a["path"] == "config.yaml" for a in info["artifacts"])

    parent = json.loads(store.runs_cmd("show", short(store.parent), "--json").stdout)
    assert {c["run_id"] for c in parent["children"]} == {j.info.run_id for j in store.jobs}
    assert parent["commands"]["rerun"].startswith("dlrun -m ")


def test_diff_lists_the_two_changed_keys_and_both_runs_metrics(store: Store) -> None:
    out = store.runs_cmd("diff", short(store.base), short(store.wide), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    params = {p["key"]: (p["a"], p["b"]) for p in result["params"]}
    assert params == {"optimizer.lr": ("0.001", "0.003"), "model.dropout": ("0.2", "0.1")}
    metrics = {m["key"]: (m["a"], m["b"]) for m in result["metrics"]}
    assert metrics["test/acc"] == (
        pytest.approx(store.base.data.metrics["test/acc"]),
        pytest.approx(store.wide.data.metrics["test/acc"]),
    )
    table = store.runs_cmd("diff", short(store.base), short(store.wide))
    assert "optimizer.lr" in table.stdout and "0.003" in table.stdout and "test/acc" in table.stdout
    rows = list(
        csv.DictReader(io.StringIO(store.runs_cmd("diff", short(store.base), short(store.wide), "--csv").stdout))
    )
    assert [r["key"] for r in rows if r["section"] == "param"] == ["model.dropout", "optimizer.lr"]


def test_plot_writes_a_png_with_one_curve_per_run(store: Store, tmp_path: Path) -> None:
    import matplotlib.image

    from dlrun.browse.plot import figure

    png = tmp_path / "acc.png"
    # The sweep parent stands for its two jobs: three curves in all.
    out = store.runs_cmd("plot", "val/acc", short(store.parent), short(store.base), "-o", str(png), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["png"] == str(png) and png.stat().st_size > 5000
    assert {c["run_id"] for c in data["curves"]} == {store.base.info.run_id, *(j.info.run_id for j in store.jobs)}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.uri)
    for curve in data["curves"]:
        history = sorted(client.get_metric_history(curve["run_id"], "val/acc"), key=lambda m: m.step)
        assert curve["values"] == [pytest.approx(m.value) for m in history] and len(history) == 2
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert len(figure("val/acc", data["curves"]).axes[0].get_lines()) == 3

    plain = store.runs_cmd("plot", "val/acc", short(store.base), cwd=tmp_path)
    assert plain.stdout.strip() == str(tmp_path / "runs-val_acc.png") and Path(plain.stdout.strip()).is_file()
    missing = store.runs_cmd("plot", "val/bleu", short(store.base))
    assert missing.returncode == 1 and "val/bleu: none of these runs logged it" in missing.stderr


# ---- errors and prefixes


def test_errors_are_one_line(store: Store, tmp_path: Path) -> None:
    unknown = store.runs_cmd("show", "deadbeef")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"dlrun: error: run=deadbeef: no MLflow run id starts with deadbeef in {store.uri}"
    too_short = store.runs_cmd("show", "abc")
    assert "not a run id (at least 8 of its 32 hex digits)" in too_short.stderr
    empty = run_dlrun(["runs"], tmp_path)
    assert empty.returncode == 1 and empty.stderr.startswith("dlrun: error: tracking.uri: no MLflow store at")
    assert not (tmp_path / "mlflow.db").exists()  # looking did not create a store
    server = run_dlrun(["runs", "--tracking-uri", "http://127.0.0.1:9"], tmp_path)
    assert server.returncode == 1 and "cannot reach MLflow server at http://127.0.0.1:9" in server.stderr
    usage = run_dlrun(["runs", "--bogus"], tmp_path)
    assert usage.returncode == 2 and usage.stderr.strip().startswith("dlrun: error: dlrun runs: unrecognized arguments")
    for result in (unknown, too_short, empty, server, usage):
        assert len(result.stderr.splitlines()) == 1, result.stderr


def test_ambiguous_prefix_is_refused(store: Store, tmp_path: Path) -> None:
    """A copy of the store gets a second run whose id shares the base run's first 8 digits."""
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.run_ids import AmbiguousRunId, resolve_run_id

    db = tmp_path / "copy.db"
    shutil.copy(store.root / "mlflow.db", db)
    twin = short(store.base) + "0" * 24
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        values = conn.execute(
            f"SELECT {', '.join(columns)} FROM runs WHERE run_uuid = ?", [store.base.info.run_id]
        ).fetchone()
        row = dict(zip(columns, values, strict=True), run_uuid=twin)
        conn.execute(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", list(row.values())
        )
    out = run_dlrun(["runs", "show", short(store.base), "--tracking-uri", f"sqlite:///{db}"], tmp_path)
    assert out.returncode == 1 and "2 runs start with" in out.stderr and "give more digits" in out.stderr
    with pytest.raises(AmbiguousRunId, match="2 runs start with"):
        resolve_run_id(MlflowClient(f"sqlite:///{db}"), short(store.base), "ckpt")
    assert (
        resolve_run_id(MlflowClient(f"sqlite:///{db}"), store.base.info.run_id[:12], "ckpt") == store.base.info.run_id
    )


def test_sweep_parent_shows_seed_aggregates(store: Store, tmp_path: Path) -> None:
    """On a copy of the store, the sweep parent gets test/acc_mean, _std, _n as seed aggregation logs them."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "agg.db"
    shutil.copy(store.root / "mlflow.db", db)
    client = MlflowClient(f"sqlite:///{db}")
    for key, value in (("test/acc_mean", 0.9123), ("test/acc_std", 0.004), ("test/acc_n", 3)):
        client.log_metric(store.parent.info.run_id, key, value)
    out = run_dlrun(["runs", "--tracking-uri", f"sqlite:///{db}"], tmp_path, {"COLUMNS": "250"})
    row = next(line for line in out.stdout.splitlines() if line.startswith(short(store.parent)))
    assert "0.9123±0.0040 n=3" in row, out.stdout
    assert "mean±std n=N: over the N seeds" in out.stdout
    rows = {
        r["run_id"]: r
        for r in csv.DictReader(
            io.StringIO(run_dlrun(["runs", "--tracking-uri", f"sqlite:///{db}", "--csv"], tmp_path).stdout)
        )
    }
    assert float(rows[store.parent.info.run_id]["test/acc_n"]) == 3


def test_parse_run_ref_accepts_prefixes() -> None:
    from dlrun.tracking.artifacts import parse_run_ref

    assert parse_run_ref("3f2a9c1e") == ("3f2a9c1e", None)
    assert parse_run_ref("runs:/3f2a9c1e/checkpoints/x.ckpt") == ("3f2a9c1e", "checkpoints/x.ckpt")
    assert parse_run_ref("3f2a9c1") is None and parse_run_ref("outputs/last.ckpt") is None


@pytest.mark.slow
def test_eval_takes_an_8_digit_prefix(store: Store) -> None:
    result = dlrun(["task=eval", f"ckpt={short(store.base)}", *LIMITS, f"tracking.uri={store.uri}"], store.root)
    assert result.returncode == 0, result.describe()
    evals = [r for r in all_runs(store.uri) if r.data.tags.get("dlrun.task") == "eval"]
    assert len(evals) == 1
    assert evals[0].data.tags["dlrun.source_run_id"] == store.base.info.run_id
    assert evals[0].data.metrics["test/acc"] == pytest.approx(store.base.data.metrics["test/acc"])


# ---- the readers agree


def test_sqlite_reader_reads_what_mlflow_client_reads(store: Store) -> None:
    from dlrun.browse.client_reader import ClientReader
    from dlrun.browse.sqlite_reader import SqliteReader

    fast, slow = SqliteReader(store.uri), ClientReader(store.uri)
    assert fast.experiments() == slow.experiments()
    ids = list(fast.experiments())
    a, b = fast.runs(ids), slow.runs(ids)
    assert [r.run_id for r in a] == [r.run_id for r in b]
    for x, y in zip(a, b, strict=True):
        assert (x.name, x.status, x.start_ms, x.end_ms, x.params, x.tags, x.experiment) == (
            y.name,
            y.status,
            y.start_ms,
            y.end_ms,
            y.params,
            y.tags,
            y.experiment,
        )
        assert x.metrics.keys() == y.metrics.keys()
        assert all(
            x.metrics[k] == y.metrics[k] or (math.isnan(x.metrics[k]) and math.isnan(y.metrics[k])) for k in x.metrics
        )
    run_ids = [r.run_id for r in a]
    assert fast.extremes(run_ids, "val/acc") == slow.extremes(run_ids, "val/acc") != {}
    assert fast.history(store.base.info.run_id, "val/acc") == slow.history(store.base.info.run_id, "val/acc")


def test_runs_command_imports_neither_lightning_nor_mlflow(store: Store) -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dlrun", "runs", "--tracking-uri", store.uri],
        check=False,
        cwd=store.root,
        env=dlrun_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    modules = {
        line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if line.startswith("import time:")
    }
    assert not modules & {"lightning", "pytorch_lightning", "torch", "mlflow", "hydra"}, sorted(modules)


# ---- richer records: dataset inputs, system metrics


def test_dataset_inputs_are_logged_per_file_set_with_digests(store: Store, tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.datasets import files_digest, log_dataset_inputs
    from dlrun.tracking.run import TrackedRun

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    client = MlflowClient(store.uri)
    created = client.create_run(store.base.info.experiment_id, run_name="datasets")
    run = TrackedRun(client, created.info.run_id, store.base.info.experiment_id, store.uri)
    train = [MNIST / "train-images-idx3-ubyte.gz", MNIST / "train-labels-idx1-ubyte.gz"]
    test = [MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"]
    log_dataset_inputs(run, "mnist", {"train": train, "val": train, "test": test})
    client.set_terminated(run.run_id)
    inputs = client.get_run(run.run_id).inputs.dataset_inputs
    found = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
    assert set(found) == {"train,val", "test"}
    assert found["test"].name == "mnist" and found["test"].digest == files_digest(test)
    assert json.loads(found["test"].source)["files"] == [p.name for p in test]
    assert found["train,val"].digest != found["test"].digest
    assert (tmp_path / "cache" / "dlrun" / "digests.json").is_file()  # the next run reads no file twice
    info = json.loads(store.runs_cmd("show", run.run_id, "--json").stdout)
    assert {d["context"] for d in info["datasets"]} == {"train,val", "test"}
    client.delete_run(run.run_id)  # keep the module's listing as it was


def test_system_metrics_switch_records_system_metrics(store: Store, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.run import RunSpec, tracked_run

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    spec = RunSpec(store.uri, "system", "sysmetrics", {}, store.root, system_metrics=True)
    with tracked_run(spec) as run:
        time.sleep(2.0)
    client = MlflowClient(store.uri)
    recorded = client.get_run(run.run_id)
    assert recorded.info.status == "FINISHED"
    assert "system/cpu_utilization_percentage" in recorded.data.metrics, sorted(recorded.data.metrics)
    client.delete_run(run.run_id)
    client.delete_experiment(run.experiment_id)


# ---- dlrun ui


@pytest.mark.slow
def test_ui_answers_on_the_printed_url_and_leaves_no_process(store: Store) -> None:
    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "ui", "--tracking-uri", store.uri, "--port", "0"],
        cwd=store.root,
        env=dlrun_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()  # printed once the server answers
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        experiment = store.base.info.experiment_id
        assert url.endswith(f"/#/experiments/{experiment}/runs?workflowType=machine_learning")
        base = url.split("/#/")[0]
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        query = json.dumps({"experiment_ids": [experiment], "max_results": 100}).encode()
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search", query, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            served = {r["info"]["run_id"] for r in json.load(answer)["runs"]}
        assert store.base.info.run_id in served
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 2  # mlflow server and its uvicorn (and job consumers)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ui_prints_the_server_page_for_an_http_store(tmp_path: Path) -> None:
    from dlrun.browse.ui import page_url

    assert page_url("http://h:5000", "3") == "http://h:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert page_url("http://h:5000", None) == "http://h:5000/"
    busy = run_dlrun(["ui", "--tracking-uri", "http://127.0.0.1:9"], tmp_path)
    assert busy.returncode == 1 and "cannot reach MLflow server" in busy.stderr
