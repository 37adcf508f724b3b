"""How many torch threads a job gets: its share of the cores when a launcher runs several jobs at once here.

Measured (issue 12, 2 cores, MNIST MLP): a 4-job joblib sweep whose jobs each start torch with one thread per
core oversubscribes the machine 4x; see ``bench/sweep_threads.py`` and docs/benchmarks.md for the numbers.
``resources.threads`` overrides the choice; ``OMP_NUM_THREADS`` set by the user is respected when it is null.
"""

from __future__ import annotations

import os
from typing import Any

THREADS_PARAM = "resources.threads_used"  # the param that records the chosen value on each run


def available_cores() -> int:
    """Cores this process may run on (CPU affinity: SLURM allocations, ``taskset``), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def launcher_parallelism(hydra_cfg: Any) -> int:
    """How many jobs the configured Hydra launcher runs at once on this machine (1 for the basic launcher).

    joblib: ``hydra.launcher.n_jobs`` (negative counts back from the cores, as joblib does); submitit's
    local launcher: ``array_parallelism``; cluster launchers (SLURM): 1, since each job gets its own allocation.
    """
    launcher = hydra_cfg.get("launcher") or {}
    target = str(launcher.get("_target_", ""))
    if "JoblibLauncher" in target:
        n_jobs = int(launcher.get("n_jobs") or 1)
        return max(1, n_jobs if n_jobs > 0 else available_cores() + 1 + n_jobs)
    if "LocalLauncher" in target and "submitit" in target:
        return max(1, int(launcher.get("array_parallelism") or 1))
    return 1


def thread_budget(cfg: Any) -> int | None:
    """``resources.threads`` if set; else None when ``OMP_NUM_THREADS`` is set (kept); else cores // parallel jobs
    (the launcher's, times the search workers of ``hydra.sweeper.workers``)."""
    from omegaconf import OmegaConf

    chosen = OmegaConf.select(cfg, "resources.threads")
    if chosen is not None:
        threads = int(chosen)
        if threads < 1:
            from dlrun.errors import ConfigError

            raise ConfigError(f"resources.threads: must be >= 1 or null (auto); got {chosen}")
        return threads
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, available_cores() // _jobs_at_once())


def _jobs_at_once() -> int:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return 1
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return 1
    workers = int((hydra_cfg.get("sweeper") or {}).get("workers") or 1)  # dlrun's Optuna sweeper's own processes
    return launcher_parallelism(hydra_cfg) * workers


def apply_thread_budget(cfg: Any) -> int:
    """Set torch's intra-op threads to the job's budget (see ``thread_budget``) and return the number in use."""
    import torch

    threads = thread_budget(cfg)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def torch_threads() -> int:
    """torch's intra-op threads in this process (set per job by ``resources.threads`` at task start)."""
    import torch

    return torch.get_num_threads()
