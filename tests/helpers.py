"""Shared by the core tests: where the real data lives, and running ``dlrun`` as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DLRUN_DATA_DIR", REPO.parent / "shared" / "data"))
MNIST = DATA / "mnist"
MULTI30K = DATA / "multi30k"
MULTI30K_FILES = tuple(f"{split}.{lang}.gz" for split in ("train", "val", "test_2016_flickr") for lang in ("de", "en"))
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# Published label counts of the official MNIST files, digits 0..9.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

ERROR_PREFIX = "dlrun: error: "


def text_args(train_src: str | Path, train_tgt: str | Path) -> list[str]:
    """``data=text model=seq2seq`` with the given training files and Multi30k's validation and test files."""
    return [
        "data=text",
        "model=seq2seq",
        f"data.train_src={train_src}",
        f"data.train_tgt={train_tgt}",
        f"data.val_src={MULTI30K / 'val.de.gz'}",
        f"data.val_tgt={MULTI30K / 'val.en.gz'}",
        f"data.test_src={MULTI30K / 'test_2016_flickr.de.gz'}",
        f"data.test_tgt={MULTI30K / 'test_2016_flickr.en.gz'}",
    ]


@dataclass
class Result:
    """What a finished ``dlrun`` process left behind."""

    args: list[str]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """Lines of stderr that are dlrun's one-line error reports (prefix removed)."""
        return [line[len(ERROR_PREFIX) :] for line in self.stderr.splitlines() if line.startswith(ERROR_PREFIX)]

    @property
    def error(self) -> str:
        """dlrun's single error line; fails the test unless there is exactly one."""
        lines = self.error_lines
        assert len(lines) == 1, f"expected one '{ERROR_PREFIX}' line, got {lines!r}\nstderr:\n{self.stderr}"
        return lines[0]

    def describe(self) -> str:
        """For assertion messages."""
        head = f"dlrun {' '.join(self.args)} -> {self.returncode}"
        return f"{head}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def dlrun_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment with the real data and no outside MLflow store or Hydra switches."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    env["DLRUN_DATA_DIR"] = str(DATA)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def dlrun(args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300) -> Result:
    """Run ``python -m dlrun ARGS`` in ``cwd`` and wait for it."""
    proc = subprocess.run(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd,
        env=dlrun_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(list(args), Path(cwd), proc.returncode, proc.stdout, proc.stderr)


def dlrun_many(jobs: Mapping[str, tuple], workers: int = 2) -> dict[str, Result]:
    """Run independent ``dlrun`` processes, ``workers`` at a time; jobs are ``(args, cwd[, env])`` by name."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(dlrun, *job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def store_uri(folder: Path, name: str = "m.db") -> str:
    """An absolute SQLite tracking URI inside ``folder``."""
    return f"sqlite:///{folder / name}"


def all_runs(uri: str) -> list:
    """Every run in every experiment of the store, newest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, order_by=["attributes.start_time DESC"]) if ids else []
