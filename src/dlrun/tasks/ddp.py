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

Ranks started by a cluster rather than by Lightning (a second machine with ``NODE_RANK=1``, ``srun``
tasks, ``torchrun`` workers) run the whole command themselves. They join global rank 0's job the same
way: rank 0 publishes its run dir in a TCP store on ``MASTER_ADDR:MASTER_PORT`` (the one torch.distributed
then uses for its own rendezvous), and every other rank waits for it before Hydra makes a folder, then runs
in that folder with a log file of its own. So: one output folder, one MLflow run (rank 0's), metrics once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from dlrun.errors import UserError
from dlrun.logs import is_rank_zero

RUN_DIR_KEY = "dlrun/run_dir"  # in the rendezvous store, beside torch's own (prefixed) keys

# Set by Lightning's launcher in the main process (or by torchrun/SLURM before we start: then kept).
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "RANK")


def child_command(local_rank: int) -> tuple[Sequence[str], str]:
    """Command and cwd that start DDP rank ``local_rank`` of the running Hydra job (a single run of it)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    node = int(os.environ.get("NODE_RANK") or 0)  # nodes started by hand share rank 0's folder: one log name each
    name = f"train_ddp_process_{local_rank}" if node == 0 else f"train_node_{node}_process_{local_rank}"
    command = [
        sys.executable,
        "-m",
        "dlrun",
        *overrides,
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={name}",
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


def rank_name() -> str:
    """This process's place as the cluster that started it numbers it: ``rank_N`` (torchrun, srun), else ``node_N``."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name):
            return f"rank_{int(os.environ[name])}"
    return f"node_{int(os.environ.get('NODE_RANK') or 0)}"  # one process per machine, started by hand


def cluster_started(num_nodes: int) -> bool:
    """True when the job's other ranks are started by a cluster (srun, torchrun, another machine), not Lightning."""
    tasks = max(int(os.environ.get(name) or "1") for name in ("SLURM_NTASKS", "WORLD_SIZE"))
    if num_nodes <= 1 and tasks <= 1:
        return False  # one process per job, or Lightning starts the others (no import of Lightning here)
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if SLURMEnvironment.detect():
        return int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if TorchElasticEnvironment.detect():
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    return num_nodes > 1 and "NODE_RANK" in os.environ


def rendezvous_store(host_it: bool) -> Any:
    """The TCP store at the cluster's main address and port; rank 0 hosts it and shares it with torch.distributed.

    ``multi_tenant``: torch.distributed's own env:// rendezvous in this process then reuses the same server
    instead of finding the port taken. Under torchrun the agent hosts the store and every rank is a client.
    """
    from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
    from torch.distributed import TCPStore
    from torch.distributed.constants import default_pg_timeout

    environment = SLURMEnvironment() if SLURMEnvironment.detect() else LightningEnvironment()
    if "MASTER_PORT" not in os.environ and not isinstance(environment, SLURMEnvironment):
        raise UserError("trainer.num_nodes: nodes started one by one need MASTER_PORT (and MASTER_ADDR) set")
    host, port = environment.main_address, environment.main_port
    server = host_it and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    # A rank waits for rank 0 as long as torch.distributed would wait for it in its own rendezvous.
    return TCPStore(host, port, None, server, default_pg_timeout, wait_for_workers=False, multi_tenant=server)


def configured_nodes(config: DictConfig) -> int:
    """``trainer.num_nodes`` of a job (1 when its config has none)."""
    return int((config.get("trainer") or {}).get("num_nodes") or 1)


def join_rank_zero(config: DictConfig) -> None:
    """On a rank > 0 started by a cluster: run in global rank 0's run dir, with a log of its own and no ``.hydra/``.

    Waits for rank 0 to say where that is, unless the command line names ``hydra.run.dir`` itself
    (Lightning's own children do; so may every node's command).
    """
    rank = rank_name()
    given = {str(o).split("=", 1)[0] for o in config.hydra.overrides.hydra}
    with read_write(config.hydra), open_dict(config.hydra):
        if "hydra.run.dir" not in given:
            print(f"dlrun: {rank.replace('_', ' ')}: waiting for rank 0's run dir", file=sys.stderr, flush=True)
            config.hydra.run.dir = rendezvous_store(host_it=False).get(RUN_DIR_KEY).decode()
        if "hydra.job.name" not in given:
            config.hydra.job.name = f"train_{rank}"
        config.hydra.output_subdir = None  # the job's .hydra/ is rank 0's


class DistributedJobs(Callback):
    """Hydra callback: DDP ranks join the job they belong to; nothing distributed outlives a job."""

    def __init__(self) -> None:
        self._env: dict[str, str | None] = {}
        self._store: Any = None  # rank 0's rendezvous store, open until torch.distributed has used it

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A single run's rank > 0 started by a cluster takes rank 0's run dir (before Hydra creates one)."""
        if not is_rank_zero() and cluster_started(configured_nodes(config)):
            join_rank_zero(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Remember the DDP environment as the job found it; route Lightning's children to this job.

        Global rank 0 of a single run whose other ranks a cluster starts tells them its run dir.
        """
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        self._env = {name: os.environ.get(name) for name in DDP_ENV}
        use_job_command()
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.RUN and is_rank_zero() and cluster_started(configured_nodes(config)):
            self._store = rendezvous_store(host_it=True)
            self._store.set(RUN_DIR_KEY, hydra_cfg.runtime.output_dir)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Close the process group and restore the environment, so the next job starts clean."""
        if "torch.distributed" in sys.modules:
            close_process_group()
        self._store = None
        for name, value in self._env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
