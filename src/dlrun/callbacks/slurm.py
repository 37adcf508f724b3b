"""The SLURM job a run belongs to: its id, whether SLURM started it again, and asking SLURM to requeue it.

SLURM sets these variables in every job; ``SLURM_RESTART_COUNT`` counts the times a job was requeued
(``scontrol requeue``, or preemption with ``PreemptMode=REQUEUE``) and started again under the same id.
"""

from __future__ import annotations

import os
import subprocess
import sys


def job_id() -> str | None:
    """This SLURM job's id as ``scontrol requeue`` takes it (``ARRAYJOB_TASK`` in an array); None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


def restarted() -> bool:
    """True when SLURM started this job again after a requeue or preemption."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or "0") > 0


def requeue() -> bool:
    """Ask SLURM to put this job back in the queue (it then ends this run of it); True when ``scontrol`` agreed."""
    job = job_id()
    if job is None:
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        print(f"dlrun: cannot requeue SLURM job {job}: {err}", file=sys.stderr, flush=True)
        return False
    if done.returncode != 0:
        reason = " ".join((done.stderr or done.stdout).split()) or f"exit code {done.returncode}"
        print(f"dlrun: scontrol requeue {job} failed: {reason}", file=sys.stderr, flush=True)
        return False
    print(f"dlrun: requeued SLURM job {job}; when it starts again it continues this run", file=sys.stderr, flush=True)
    return True
