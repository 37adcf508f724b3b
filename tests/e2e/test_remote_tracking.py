"""A real ``mlflow server`` (SQLite backend, artifact proxying) as the tracking URI; and one that is not there."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import dlrun, dlrun_in_process, early

LIMITS = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "tracking.log_model=false",
    "callbacks.plots=false",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """An ``mlflow server`` process started by the tests."""

    process: subprocess.Popen
    url: str
    log: Path

    def wait_until_up(self, timeout: float = 90) -> str:
        """Poll /health until it answers 200; return the URL."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)


@contextlib.contextmanager
def running_server(folder: Path) -> Iterator[Server]:
    """Start ``mlflow server`` on a free local port (not waiting for it); stop it and its workers at the end."""
    folder.mkdir()
    port = free_port()
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the uvicorn worker goes down with it
    )  # fmt: skip
    try:
        yield Server(process, f"http://127.0.0.1:{port}", folder / "server.log")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_unreachable_server_fails_before_training(tmp_path: Path) -> None:
    # A port nobody listens on, in this process (test_bad_inputs.py runs an unreachable server by the command:
    # exit status, stderr).
    url = f"http://127.0.0.1:{free_port()}"
    result = dlrun_in_process([f"tracking.uri={url}", *LIMITS], tmp_path)
    assert result.returncode == 1, result.describe()
    assert result.error.startswith(f"tracking.uri: cannot reach MLflow server at {url}")
    assert "epoch 1/1" not in result.stdout and "Total params" not in result.stdout
    assert not list(tmp_path.glob("outputs/*/*/checkpoints"))


def test_runs_metrics_and_checkpoint_reach_a_tracking_server(early_result: Callable) -> None:
    early_result(train_against_a_server)  # its checks run with it, from the session's start (helpers.early)


@early
def train_against_a_server(tmp_path: Path) -> None:
    """The server's start, a run sent to it and what the server then holds: a minute of one core, one process at
    a time, so an early job."""
    with running_server(tmp_path / "server") as server:
        url = server.wait_until_up()
        result = dlrun([f"tracking.uri={url}", *LIMITS], tmp_path)
        assert result.returncode == 0, result.describe()
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to a local store

        from mlflow.tracking import MlflowClient

        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("mnist")
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server
        assert {"train/samples_per_s", "val/acc", "test/acc", "test/loss"} <= set(run.data.metrics)
        assert run.data.params["optimizer.lr"] == "0.001"
        (checkpoint,) = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
        local = client.download_artifacts(run.info.run_id, checkpoint, str(tmp_path / "download"))
        assert "state_dict" in torch.load(local, map_location="cpu", weights_only=True)
        assert {"config.yaml", "model_summary.txt"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
