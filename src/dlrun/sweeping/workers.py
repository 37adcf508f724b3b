"""``hydra.sweeper.workers=K``: K search processes on this machine sharing one study, i.e. K asynchronous slots.

Each worker is the same ``dlrun`` command, a sequential ask/run/tell loop on the shared study: a new trial
starts as soon as any worker is free (a pruned or short trial frees its worker at once), unlike Hydra's
launcher batches, which end with their slowest job. This process is worker 0 and prints the study's table
at the end; workers 1..K-1 write their output to ``workers/N.log`` in the sweep directory. Workers started
any other way (another terminal, another machine, a SLURM array task) join the same study the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Overrides a worker gets from the command that started it: set anew for each.
OWN_KEYS = ("hydra.sweeper.workers", "hydra.sweep.dir")


@dataclass
class Worker:
    """A started worker process and where its output goes."""

    index: int
    process: subprocess.Popen
    log: Path


def worker_command(config: Any, sweep_dir: Path) -> list[str]:
    """The ``python -m dlrun -m ...`` command of one more worker: this command's overrides, one worker, the same
    sweep directory (trial numbers are unique in the study, so each trial's folder is too)."""
    from dlrun.config.search_path import CONFIG_NAME

    hydra_overrides = [str(o) for o in config.hydra.overrides.hydra if str(o).split("=", 1)[0] not in OWN_KEYS]
    command = [sys.executable, "-m", "dlrun", "-m", *hydra_overrides]
    command += ["hydra.sweeper.workers=1", f"hydra.sweep.dir={sweep_dir}"]
    name = str(config.hydra.job.config_name)
    if name != CONFIG_NAME:
        command.append(f"--config-name={name}")
    return command + [str(o) for o in config.hydra.overrides.task]


def worker_env(threads: int | None) -> dict[str, str]:
    """This process's environment, with ``OMP_NUM_THREADS`` set to the worker's share of the cores if unset."""
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # set by dlrun's CLI for itself; the worker's CLI sets its own
    if threads is not None and not env.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def start_workers(config: Any, count: int, sweep_dir: Path, threads: int | None) -> list[Worker]:
    """Start workers 1..count-1 of this search; each writes to ``SWEEP_DIR/workers/N.log``."""
    folder = sweep_dir / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    command, env = worker_command(config, sweep_dir), worker_env(threads)
    workers = []
    for index in range(1, count):
        log = folder / f"{index}.log"
        with log.open("w", encoding="utf-8") as out:
            process = subprocess.Popen(
                command, cwd=str(config.hydra.runtime.cwd), env=env, stdout=out, stderr=subprocess.STDOUT
            )
        workers.append(Worker(index, process, log))
    return workers


def stop_workers(workers: list[Worker]) -> None:
    """Interrupt the workers still running (as Ctrl-C would): this command stopped, so do they."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGINT)


def wait_workers(workers: list[Worker]) -> list[str]:
    """Wait for the workers to end; one line per worker that failed (its exit code and log)."""
    problems = []
    for worker in workers:
        code = worker.process.wait()
        if code != 0:
            problems.append(f"worker {worker.index} exited with {code} (its output: {worker.log})")
    return problems
