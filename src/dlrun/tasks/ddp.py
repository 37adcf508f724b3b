"""Lightning's DDP inside Hydra jobs, single runs and sweeps alike.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by running the command line again with Hydra overrides
(``_hydra_subprocess_cmd``). Two things break inside a multirun (the known crash of the usual
Lightning+Hydra template):
- the command line is the sweep's (``-m model=mlp,cnn``, or a joblib worker's own argv), so each
  child would start a whole new sweep instead of joining this job;
- the launcher leaves ``LOCAL_RANK``/``MASTER_PORT``/... in ``os.environ`` and the process group
  open, so the next job in the same process believes it is an externally launched rank and hangs.
``DistributedJobs`` (a Hydra callback, ``hydra.callbacks.ddp``) fixes both: children run exactly this
job's overrides in its output directory, and each job ends with the process group closed and the
environment as it found it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Set by Lightning's launcher in the main process (or by torchrun/SLURM before we start: then kept).
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "RANK")


def child_command(local_rank: int) -> tuple[Sequence[str], str]:
    """Command and cwd that start DDP rank ``local_rank`` of the running Hydra job (a single run of it)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    command = [
        sys.executable,
        "-m",
        "dlrun",
        *overrides,
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",  # the job's .hydra/ is rank 0's
    ]
    return command, str(hydra_cfg.runtime.cwd)


def use_job_command() -> None:
    """Make Lightning's subprocess launcher start children with ``child_command``."""
    from dlrun._upstream import lightning_set_ddp_child_command

    lightning_set_ddp_child_command(child_command)


def close_process_group() -> None:
    """Destroy the default torch.distributed process group, if one is open."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class DistributedJobs(Callback):
    """Hydra callback: DDP children join the job they belong to; nothing distributed outlives a job."""

    def __init__(self) -> None:
        self._env: dict[str, str | None] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Remember the DDP environment as the job found it; route Lightning's children to this job."""
        self._env = {name: os.environ.get(name) for name in DDP_ENV}
        use_job_command()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Close the process group and restore the environment, so the next job starts clean."""
        if "torch.distributed" in sys.modules:
            close_process_group()
        for name, value in self._env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
