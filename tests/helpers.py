"""Shared by the tests: where the real data lives, and running ``dlrun`` as a real subprocess or in this process."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    traceback: str = ""  # in-process runs: the exception the one line was made of

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
        text = f"{head}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        return f"{text}\n--- raised (in-process)\n{self.traceback[-3000:]}" if self.traceback else text


# Held while an in-process job has this process's environment changed: a thread starting a process meanwhile
# waits for the environment to be the test process's own again.
_ENVIRONMENT = threading.RLock()


def dlrun_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment with the real data and no outside MLflow store or Hydra switches."""
    with _ENVIRONMENT:
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    env["DLRUN_DATA_DIR"] = str(DATA)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def dlrun(args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300) -> Result:
    """Run ``python -m dlrun ARGS`` in ``cwd`` and wait for it."""
    return _dlrun_process(args, cwd, dlrun_env(env), timeout)


def _dlrun_process(args: Sequence[str], cwd: Path, full_env: Mapping[str, str], timeout: float = 300) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd,
        env=dict(full_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(list(args), Path(cwd), proc.returncode, proc.stdout, proc.stderr)


def dlrun_many(jobs: Mapping[str, tuple], workers: int = 2, in_process: Collection[str] = ()) -> dict[str, Result]:
    """Run independent ``dlrun`` jobs; jobs are ``(args, cwd[, env])`` by name.

    Processes run ``workers`` at a time in worker threads; the jobs named in ``in_process`` run meanwhile in
    this thread (``dlrun_in_process``). Each process's environment is taken before any in-process job starts.
    """
    unknown = set(in_process) - set(jobs)
    assert not unknown, f"no such jobs: {sorted(unknown)}"
    futures = dlrun_start({name: job for name, job in jobs.items() if name not in in_process}, workers)
    done = {name: dlrun_in_process(*job) for name, job in jobs.items() if name in in_process}
    return {name: done[name] if name in done else futures[name].result() for name in jobs}


def dlrun_start(jobs: Mapping[str, tuple], workers: int = 2) -> dict[str, Future[Result]]:
    """Start ``dlrun`` processes ``workers`` at a time in the background; jobs are ``(args, cwd[, env])`` by name.

    Each environment is taken now, in this thread: an in-process job running meanwhile changes this process's.
    """
    envs = {name: dlrun_env(job[2] if len(job) > 2 else None) for name, job in jobs.items()}
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = {name: pool.submit(_dlrun_process, job[0], job[1], envs[name]) for name, job in jobs.items()}
    pool.shutdown(wait=False)  # the submitted processes still run; their futures tell when they are done
    return futures


# ---------------------------------------------------------------- dlrun in this process

# What a job run in this process may change and must leave as it found it. The state test
# (tests/unit/test_in_process.py) checks that each of these is restored.
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def _logger_states() -> dict[str, tuple]:
    manager = logging.Logger.manager
    loggers = {name: lg for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    loggers[""] = logging.getLogger()
    return {
        name: (lg.level, tuple(lg.handlers), tuple(lg.filters), lg.propagate, lg.disabled)
        for name, lg in loggers.items()
    }


def process_state() -> dict[str, Any]:
    """Everything of this process that an in-process job could leave changed, in comparable form."""
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "cwd": os.getcwd(),
        "argv": list(sys.argv),
        "environ": dict(os.environ),
        "sys.path": list(sys.path),
        "torch threads": torch.get_num_threads(),
        "signal handlers": {s: signal.getsignal(s) for s in signal.valid_signals() if s not in _UNCATCHABLE},
        "loggers": _logger_states(),
        "logging.disable": logging.root.manager.disable,
        "warning filters": list(warnings.filters),
        "stdout/stderr": (sys.stdout, sys.stderr),
        "random": random.getstate(),
        "numpy random": repr(np.random.get_state()),
        "torch random": torch.random.get_rng_state().tolist(),
    }
    if "mlflow" in sys.modules:
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils

        active = mlflow.active_run()
        uri = mlflow.get_tracking_uri() if tracking_utils.is_tracking_uri_set() else None
        state["mlflow"] = (uri, active.info.run_id if active else None)
    if "hydra" in sys.modules:
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        state["hydra"] = (GlobalHydra.instance().is_initialized(), id(HydraConfig.instance().cfg))
    return state


def state_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple]:
    """The entries of two ``process_state()`` that differ, as (before, after). Left out: loggers first made in
    between, and MLflow's and Hydra's state when the library was first imported in between (by an import)."""
    after = {**after, "loggers": {k: v for k, v in after["loggers"].items() if k in before["loggers"]}}
    return {key: (value, after.get(key)) for key, value in before.items() if value != after.get(key)}


def _mlflow_global_uri() -> str | None:
    """MLflow's process-wide tracking URI as set by ``mlflow.set_tracking_uri`` (None: not set)."""
    if "mlflow" not in sys.modules:
        return None
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri


@contextlib.contextmanager
def kept_process_state(folder: Path) -> Iterator[None]:
    """Restore, on the way out, everything ``process_state`` lists; forget modules imported from ``folder``."""
    import numpy as np
    import torch

    cwd, argv, environ, path = os.getcwd(), list(sys.argv), dict(os.environ), list(sys.path)
    threads = torch.get_num_threads()
    handlers = {s: signal.getsignal(s) for s in signal.valid_signals() if s not in _UNCATCHABLE}
    loggers, disabled = _logger_states(), logging.root.manager.disable
    filters = list(warnings.filters)
    streams = (sys.stdout, sys.stderr)
    rng = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    modules = set(sys.modules)
    mlflow_uri = _mlflow_global_uri()
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.argv[:] = argv
        os.environ.clear()
        os.environ.update(environ)
        sys.path[:] = path
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        for signum, handler in handlers.items():
            if handler is not None and signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)
        for name, (level, kept_handlers, kept_filters, propagate, was_disabled) in loggers.items():
            logger = logging.getLogger(name or None)
            logger.setLevel(level)
            logger.handlers[:] = kept_handlers
            logger.filters[:] = kept_filters
            logger.propagate, logger.disabled = propagate, was_disabled
        logging.disable(disabled)
        warnings.filters[:] = filters
        warnings._filters_mutated()  # type: ignore[attr-defined]  # the filter cache forgets the run's filters
        sys.stdout, sys.stderr = streams
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.random.set_rng_state(rng[2])
        root = str(folder.resolve())
        for name in set(sys.modules) - modules:  # the user's own modules, imported by _target_ from the folder
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith(root + os.sep):
                del sys.modules[name]
        if "mlflow" in sys.modules:
            import mlflow

            while mlflow.active_run() is not None:  # a fluent run left open would leak into the next job
                mlflow.end_run("KILLED")
            # Lightning's MLFlowLogger sets MLflow's global tracking URI to the run's store and leaves it set.
            from mlflow.tracking._tracking_service import utils as tracking_utils

            tracking_utils._tracking_uri = mlflow_uri
        if "hydra" in sys.modules:
            from hydra.core.global_hydra import GlobalHydra

            GlobalHydra.instance().clear()


def dlrun_in_process(
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    runner: Callable[[list[str]], Any] | None = None,
) -> Result:
    """What ``dlrun ARGS`` does in ``cwd``, run in this process: ``dlrun.run(ARGS)`` (the CLI's config and task).

    A failure becomes the CLI's exit code and its one ``dlrun: error:`` line (``dlrun.cli.describe_error``),
    printed after whatever the job wrote to stderr. The environment is ``dlrun_env(env)`` during the job;
    the working directory, environment, ``sys.path``, torch threads, signal handlers, logging, warning
    filters, random states and user modules are restored after it. No ``-m``: sweeps need the command.
    """
    from dlrun.cli import describe_error
    from dlrun.errors import RunInterrupted, one_line

    if runner is None:
        import dlrun

        runner = dlrun.run
    args = list(args)
    out, err = io.StringIO(), io.StringIO()
    code, raised = 0, ""
    job_env = dlrun_env(env)
    with _ENVIRONMENT, kept_process_state(Path(cwd)):
        os.environ.clear()
        os.environ.update(job_env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runner(args)
            except (Exception, RunInterrupted) as error:  # what cli.main reports; KeyboardInterrupt stops the tests
                raised = "".join(traceback.format_exception(error))
                code, line = describe_error(error, args)
                print(f"dlrun: error: {one_line(line)}", file=err)  # the process's stderr, whatever the job did
    return Result(args, Path(cwd), code, out.getvalue(), err.getvalue(), raised)


class Started:
    """Independent long jobs (functions that run commands and return what they left), all started now and run
    ``workers`` at a time in worker threads; ``started[name]`` waits for one job and gives its result."""

    def __init__(self, jobs: Mapping[str, Callable[[], Any]], workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._futures = {name: self._pool.submit(job) for name, job in jobs.items()}

    def __getitem__(self, name: str) -> Any:
        return self._futures[name].result()

    def wait(self) -> None:
        """Until every job is done (a job's failure is for its own test to report)."""
        for future in self._futures.values():
            future.exception()

    def close(self) -> None:
        """Drop the jobs not started yet, wait for the running ones."""
        self._pool.shutdown(wait=True, cancel_futures=True)


# Jobs started when the test session starts (see ``early``), by "module.function".
EARLY_JOBS: dict[str, Callable[[Path], Any]] = {}


def early(job: Callable[[Path], Any]) -> Callable[[Path], Any]:
    """Decorator: run ``job(folder)`` (commands in a fresh folder) from the start of the test session, in one
    background thread beside the other tests, so that a long chain of processes waits on one core while the
    tests before its own use the other. Its module's tests get what it returned from the ``early_result`` fixture
    (tests/conftest.py). A job runs only when its module has a test selected; it must not change this
    process's working directory or environment."""
    EARLY_JOBS[early_key(job)] = job
    return job


def selected(session: Any) -> set[str]:
    """Names of the test functions this session runs (after ``-m``/``-k``): module fixtures that start commands
    for several tests start only those a selected test reads."""
    return {getattr(item, "originalname", item.name) for item in session.items}


def early_key(job: Callable[..., Any]) -> str:
    return f"{job.__module__}.{job.__qualname__}"


def git(folder: Path, *args: str) -> str:
    """``git -C folder ARGS`` with a test identity; its stdout, stripped (fails on a non-zero exit)."""
    done = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def store_uri(folder: Path, name: str = "m.db") -> str:
    """An absolute SQLite tracking URI inside ``folder``."""
    return f"sqlite:///{folder / name}"


def all_runs(uri: str) -> list:
    """Every run in every experiment of the store, newest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, order_by=["attributes.start_time DESC"]) if ids else []
