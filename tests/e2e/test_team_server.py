"""``dlrun server`` as a team uses it: a real PostgreSQL, MLflow's basic-auth logins, artifacts over HTTP, and a
client that reaches the server by an address other than localhost (127.0.0.2); host rules of ``dlrun ui`` and
``dlrun server``. One PostgreSQL and one server for the module (each start costs tens of seconds of one core)."""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO, dlrun, dlrun_env, dlrun_in_process, free_port

HOST = "127.0.0.2"  # loopback, but neither localhost nor 127.0.0.1: MLflow's Host check must be told about it
ADMIN_PASSWORD = "admin-secret-pw-1"
ALICE, ALICE_PASSWORD = "alice", "alice-secret-pw-1"
LIMITS = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=500",
    "model.hidden_sizes=[64]",
    "callbacks.plots=false",
]
PARENT = "mlflow.parentRunId"


# ---------------------------------------------------------------- PostgreSQL, as an unprivileged user


def postgres_binary(name: str) -> str:
    """``initdb``/``pg_ctl`` on PATH, else Debian's /usr/lib/postgresql/N/bin; fails the test when missing."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        pytest.fail(f"PostgreSQL's {name} is needed (Debian: apt-get install postgresql; .ci/run installs it)")
    return found


def unprivileged(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run ``command`` as nobody."""
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


@dataclass
class Postgres:
    """A PostgreSQL cluster in a temporary folder, trusting local TCP connections, with database ``mlflow``."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        """SQLAlchemy's URL of the ``mlflow`` database."""
        return f"postgresql://dlrun@127.0.0.1:{self.port}/mlflow"

    def query(self, sql: str) -> list[tuple]:
        """Rows of one query on the ``mlflow`` database."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=dlrun dbname=mlflow") as connection:
            return connection.execute(sql).fetchall()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL on a free port for this module, stopped and removed at its end."""
    folder = Path(tempfile.mkdtemp(prefix="dlrun-pg-", dir="/tmp"))  # under /tmp: nobody must reach it
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody", "nogroup")
    data, port = folder / "data", free_port()
    pg_ctl = postgres_binary("pg_ctl")
    run = lambda *args: subprocess.run(unprivileged(list(args)), check=True, capture_output=True, text=True)  # noqa: E731
    run(postgres_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "dlrun")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=dlrun dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE mlflow")
        yield Postgres(folder, port)
    finally:
        subprocess.run(unprivileged([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- dlrun server


@dataclass
class TeamServer:
    """A ``dlrun server`` process, what clients need, and how to start it again."""

    process: subprocess.Popen
    url: str
    folder: Path
    stderr: Path
    args: list[str]

    def stop(self) -> None:
        """SIGTERM to dlrun server (it stops MLflow's processes and exits)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def start_again(self) -> None:
        """The same command again (same folder, port and database: the admin exists, no password needed)."""
        again = start_server(self.args, self.folder, {})
        assert again.url == self.url
        self.process = again.process


def start_server(args: list[str], folder: Path, env: dict[str, str], timeout: float = 180) -> TeamServer:
    """Start ``dlrun server ARGS --dir FOLDER`` and wait for the URL it prints."""
    folder.mkdir(parents=True, exist_ok=True)
    err = folder.parent / f"{folder.name}.stderr"
    with err.open("a") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "dlrun", "server", *args, "--dir", str(folder)],
            stdout=subprocess.PIPE,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dlrun_env(env),
            start_new_session=True,
        )
    os.set_blocking(process.stdout.fileno(), False)
    deadline, line = time.monotonic() + timeout, ""
    while time.monotonic() < deadline and process.poll() is None:
        line += process.stdout.readline() or ""
        if line.endswith("\n"):
            return TeamServer(process, line.strip(), folder, err, args)
        time.sleep(0.3)
    server = TeamServer(process, "", folder, err, args)
    server.stop()
    pytest.fail(f"dlrun server printed no URL:\n{err.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def team_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    """``dlrun server`` on the PostgreSQL, listening on 127.0.0.2 with logins, and a user alice."""
    folder = tmp_path_factory.mktemp("team") / "server"
    port = free_port(HOST)
    args = ["--backend-store-uri", postgres.url, "--host", HOST, "--port", str(port), "--auth", "--workers", "1"]
    server = start_server(args, folder, {"DLRUN_SERVER_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        added = dlrun(
            ["server", "user", "add", ALICE, "--dir", str(folder)],
            folder.parent,
            env={"DLRUN_SERVER_USER_PASSWORD": ALICE_PASSWORD},
        )
        assert added.returncode == 0, added.describe()
        yield server
    finally:
        server.stop()


def alice(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A client's environment: alice's login, as MLflow reads it."""
    return {"MLFLOW_TRACKING_USERNAME": ALICE, "MLFLOW_TRACKING_PASSWORD": ALICE_PASSWORD, **(extra or {})}


@contextlib.contextmanager
def admin_login() -> Iterator[None]:
    """Within: MLflow clients of this process log in as the admin (MLflow reads the login from the environment)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    before = {key: os.environ.get(key) for key in keys}
    os.environ.update({keys[0]: "admin", keys[1]: ADMIN_PASSWORD})
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def runs_of(url: str, experiment: str) -> list:
    """Every run of ``experiment`` on the server, newest first (none when the experiment does not exist)."""
    from mlflow.tracking import MlflowClient

    with admin_login():
        client = MlflowClient(url)
        found = client.get_experiment_by_name(experiment)
        return client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"]) if found else []


def experiment_exists(url: str, name: str) -> bool:
    """True when the server holds an experiment of this name."""
    from mlflow.tracking import MlflowClient

    with admin_login():
        return MlflowClient(url).get_experiment_by_name(name) is not None


# ---------------------------------------------------------------- tests


@pytest.mark.slow  # needs the server on PostgreSQL (~20 s to start); tests/unit/test_server_rules.py is default
def test_the_server_prints_a_url_on_the_address_it_serves(team_server: TeamServer) -> None:
    assert team_server.url.startswith(f"http://{HOST}:")
    text = team_server.stderr.read_text()
    assert "logins: admin" in text and "hydra.sweeper.storage='postgresql://dlrun@127.0.0.1:" in text


@pytest.mark.slow  # needs the server on PostgreSQL (~20 s to start); tests/unit/test_server_rules.py is default
def test_unauthenticated_requests_to_the_runs_api_are_refused(team_server: TeamServer) -> None:
    body = json.dumps({"experiment_ids": ["0"], "max_results": 1}).encode()

    def search(login: str | None) -> int:
        request = urllib.request.Request(f"{team_server.url}/api/2.0/mlflow/runs/search", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        if login:
            request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    assert search(None) == 401
    assert search(f"{ALICE}:not-her-password") == 401
    assert search(f"{ALICE}:{ALICE_PASSWORD}") == 200


@pytest.mark.slow  # needs the server on PostgreSQL (~20 s to start); tests/unit/test_server_rules.py is default
def test_a_wrong_password_stops_in_one_line_before_any_run(team_server: TeamServer, tmp_path: Path) -> None:
    wrong = {"MLFLOW_TRACKING_USERNAME": ALICE, "MLFLOW_TRACKING_PASSWORD": "not-her-password"}
    result = dlrun_in_process(
        [f"tracking.uri={team_server.url}", *LIMITS, "tracking.experiment=refused"], tmp_path, env=wrong
    )
    assert result.returncode == 1, result.describe()
    assert result.error == (
        f"tracking.uri: MLflow server at {team_server.url} refused user 'alice' (HTTP 401: wrong or missing login; "
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
    )
    assert "epoch 1/1" not in result.stdout
    assert not experiment_exists(team_server.url, "refused")  # nothing was created


def runs(argv: list[str]) -> None:
    """``dlrun runs ARGV`` as dlrun_in_process runs a job: a failure raises."""
    from dlrun.browse.commands import runs_main

    assert runs_main(argv[1:]) == 0


@pytest.mark.slow  # a training through the login onto PostgreSQL (~20 s); the refusals above stay in the default suite
def test_a_client_trains_a_run_onto_the_server(team_server: TeamServer, postgres: Postgres, tmp_path: Path) -> None:
    result = dlrun_in_process(
        [f"tracking.uri={team_server.url}", *LIMITS, "tracking.experiment=team"], tmp_path, env=alice()
    )
    assert result.returncode == 0, result.describe()
    assert not (tmp_path / "mlflow.db").exists()
    (run,) = runs_of(team_server.url, "team")
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {"train/samples_per_s", "val/loss", "val/acc", "test/acc"} <= set(run.data.metrics)
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0
    # The records are in PostgreSQL, the files in the server's own folder (uploaded over HTTP).
    assert postgres.query(f"SELECT status FROM runs WHERE run_uuid = '{run.info.run_id}'") == [("FINISHED",)]
    files = team_server.folder / "artifacts" / run.info.experiment_id / run.info.run_id / "artifacts"
    (checkpoint,) = (files / "checkpoints").glob("*.ckpt")
    import torch

    assert "state_dict" in torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert (files / "config.yaml").is_file()
    models = list((team_server.folder / "artifacts" / run.info.experiment_id / "models").glob("m-*/artifacts/MLmodel"))
    assert len(models) == 1  # the logged model, on the server too
    # The run browser through the same login.
    listed = dlrun_in_process(["runs", "--tracking-uri", team_server.url, "--json"], tmp_path, env=alice(), runner=runs)
    assert listed.returncode == 0, listed.describe()
    assert run.info.run_id in listed.stdout


@pytest.mark.slow  # ~150 s on one busy core
def test_a_joblib_sweep_onto_the_server(team_server: TeamServer, tmp_path: Path) -> None:
    args = ["-m", "seed=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "tracking.log_model=false"]
    result = dlrun(
        [*args, *LIMITS, f"tracking.uri={team_server.url}", "tracking.experiment=team_sweep"], tmp_path, env=alice()
    )
    assert result.returncode == 0, result.describe()
    runs = runs_of(team_server.url, "team_sweep")
    parents = [r for r in runs if PARENT not in r.data.tags]
    children = [r for r in runs if PARENT in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags[PARENT] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in children} == {"FINISHED"}
    assert sorted(r.data.params["seed"] for r in children) == ["1", "2"]


@pytest.mark.slow  # ~170 s on one busy core
def test_an_optuna_search_onto_the_server_keeps_its_study_in_postgresql(
    team_server: TeamServer, postgres: Postgres, tmp_path: Path
) -> None:
    storage = f"{postgres.url}?options=-csearch_path%3Doptuna"  # what dlrun server printed (its own schema)
    args = [
        "hparams_search=mnist_optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage='{storage}'",
        "hydra.sweeper.study_name=team_study",
        "tracking.log_model=false",
        *[a for a in LIMITS if not a.startswith("model.")],
        f"tracking.uri={team_server.url}",
        "tracking.experiment=team_optuna",
    ]
    result = dlrun(args, tmp_path, env=alice())
    assert result.returncode == 0, result.describe()
    runs = runs_of(team_server.url, "team_optuna")
    parents = [r for r in runs if PARENT not in r.data.tags]
    children = [r for r in runs if PARENT in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert {r.info.status for r in children} == {"FINISHED"}
    states = postgres.query(
        "SELECT t.state FROM optuna.trials t JOIN optuna.studies s ON s.study_id = t.study_id "
        "WHERE s.study_name = 'team_study'"
    )
    assert sorted(state for (state,) in states) == ["COMPLETE"] * 3


# ---------------------------------------------------------------- host rules


def test_server_beyond_loopback_refuses_to_start_without_an_admin_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from dlrun.server.command import server_main

    monkeypatch.delenv("DLRUN_SERVER_ADMIN_PASSWORD", raising=False)
    assert server_main(["--host", "0.0.0.0", "--port", "0", "--dir", str(tmp_path / "s")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("dlrun: error: DLRUN_SERVER_ADMIN_PASSWORD: not set")
    monkeypatch.setenv("DLRUN_SERVER_ADMIN_PASSWORD", "short")
    assert server_main(["--host", "0.0.0.0", "--port", "0", "--dir", str(tmp_path / "s")]) == 2
    assert "at least 12 characters" in capsys.readouterr().err


def local_store(folder: Path) -> str:
    """A SQLite store with one experiment (``dlrun ui`` serves existing stores only)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'm.db'}"
    MlflowClient(uri).create_experiment("local")
    return uri


def test_ui_beyond_loopback_is_refused_without_no_auth(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dlrun.browse.ui import ui_main

    uri = local_store(tmp_path)
    assert ui_main(["--tracking-uri", uri, "--host", "0.0.0.0", "--port", "0"]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dlrun:")]
    assert line.startswith("dlrun: error: --host 0.0.0.0: dlrun ui has no logins")


@pytest.mark.slow  # a second server start (~55 s); the refusal above stays in the default suite
def test_ui_with_no_auth_warns_and_serves_the_url_it_prints(tmp_path: Path) -> None:
    uri = local_store(tmp_path)
    err = tmp_path / "ui.stderr"
    with err.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "dlrun", "ui", "--tracking-uri", uri, "--host", "0.0.0.0", "--port", "0",
             "--no-auth"],
            stdout=subprocess.PIPE, stderr=sink, text=True, env=dlrun_env(), cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    try:
        url = process.stdout.readline().strip()  # printed once the server answers
        assert url.startswith("http://") and "127.0.0.1" not in url and "0.0.0.0" not in url, err.read_text()
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1") as answer:
            assert answer.status == 200  # the Host header it printed is one it accepts
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    warnings = [line for line in err.read_text().splitlines() if line.startswith("dlrun: warning:")]
    assert warnings == [
        "dlrun: warning: --no-auth: dlrun ui on 0.0.0.0 has no logins; anyone who can reach this port can read, "
        "change and delete every run and download every artifact"
    ]
    assert process.returncode == 0


# ---------------------------------------------------------------- an outage of the server in the middle of runs

USER_CODE = str(REPO / "tests" / "user_callbacks")  # hold_epochs.HoldEpochs: a run waits at an epoch's end


def start_run(folder: Path, url: str, epochs: int, experiment: str, holds: tuple[int, ...]) -> subprocess.Popen:
    """A ``dlrun`` training process of ``epochs`` epochs that waits at the end of each epoch in ``holds`` until
    the test removes folder/hold-N; its stdout and stderr go to files in ``folder``."""
    folder.mkdir()
    for epoch in holds:
        (folder / f"hold-{epoch}").touch()
    args = [
        f"tracking.uri={url}",
        f"tracking.experiment={experiment}",
        *[a for a in LIMITS if not a.startswith("trainer.max_epochs")],
        f"trainer.max_epochs={epochs}",
        "tracking.log_model=false",  # MLflow's model packaging: most of a tiny run's time, and not spooled
        "+callbacks.hold._target_=hold_epochs.HoldEpochs",
        f"+callbacks.hold.folder={folder}",
    ]
    env = dlrun_env(alice({"PYTHONPATH": os.pathsep.join(filter(None, [USER_CODE, os.environ.get("PYTHONPATH")]))}))
    with (folder / "out").open("w") as out, (folder / "err").open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "dlrun", *args], cwd=folder, stdout=out, stderr=err, env=env)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 300) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def epoch_history(url: str, run_id: str, key: str = "val/acc") -> list[int]:
    """The steps at which the run recorded ``key``."""
    from mlflow.tracking import MlflowClient

    with admin_login():
        return [m.step for m in MlflowClient(url).get_metric_history(run_id, key)]


def server_outage(team_server: TeamServer, folder: Path, seconds: float) -> None:
    """Two runs; the server stops after their first epoch for ``seconds``. Run ``through`` (4 epochs) trains on
    and finishes after the server is back; run ``ends`` (2 epochs) ends during the outage and is sent by
    ``dlrun runs sync``. Both end FINISHED with every epoch's metrics and their checkpoint."""
    through, ends = folder / "through", folder / "ends"
    a = start_run(through, team_server.url, 4, "outage", holds=(1, 3))
    b = start_run(ends, team_server.url, 2, "outage", holds=(1,))
    # Both wait at the end of epoch 1 (its metrics sent) while the server is stopped.
    wait_for("epoch 1 of both runs", lambda: all("epoch 1/" in (f / "out").read_text() for f in (through, ends)))
    team_server.stop()
    stopped_at = time.monotonic()
    (through / "hold-1").unlink()
    (ends / "hold-1").unlink()
    assert b.wait(timeout=300) == 0, (ends / "err").read_text()[-3000:]  # ended during the outage
    time.sleep(max(0.0, seconds - (time.monotonic() - stopped_at)))
    team_server.start_again()
    (through / "hold-3").unlink()  # epochs 2 and 3 were trained while the server was away
    assert a.wait(timeout=600) == 0, (through / "err").read_text()[-3000:]

    a_err, b_err = (through / "err").read_text(), (ends / "err").read_text()
    assert a_err.count("cannot be reached") == 1 and "answers again" in a_err, a_err[-3000:]
    assert "is still away" in b_err and "dlrun runs sync" in b_err, b_err[-3000:]
    (spool,) = ends.glob("outputs/*/*/tracking-spool")
    assert not list(through.glob("outputs/*/*/tracking-spool"))  # sent: nothing left behind

    synced = dlrun(["runs", "sync"], ends, env=alice())
    assert synced.returncode == 0, synced.describe()
    assert re.search(r"^sent \d+ records of run [0-9a-f]{32} to ", synced.stdout, re.M), synced.stdout
    assert not spool.exists()

    runs = {r.data.params["trainer.max_epochs"]: r for r in runs_of(team_server.url, "outage")}
    assert {k: r.info.status for k, r in runs.items()} == {"4": "FINISHED", "2": "FINISHED"}
    for epochs, run in runs.items():
        assert len(epoch_history(team_server.url, run.info.run_id)) == int(epochs), epochs  # every epoch's val/acc
        assert "test/acc" in run.data.metrics
        files = team_server.folder / "artifacts" / run.info.experiment_id / run.info.run_id / "artifacts"
        assert list((files / "checkpoints").glob("*.ckpt")), epochs
        assert (files / "config.yaml").is_file()


@pytest.mark.slow  # ~3 minutes on two busy cores; the six-minute one below is the issue's
def test_runs_survive_a_short_outage_of_the_server(team_server: TeamServer, tmp_path: Path) -> None:
    server_outage(team_server, tmp_path, seconds=20)


@pytest.mark.slow  # the six minutes
def test_runs_survive_a_six_minute_outage_of_the_server(team_server: TeamServer, tmp_path: Path) -> None:
    server_outage(team_server, tmp_path, seconds=360)
