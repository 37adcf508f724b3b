"""``dlrun rerun RUN_ID [--check] [KEY=VALUE ...]``: run a recorded training run again from its record alone.

Read top to bottom: find the run and its ``capsule/``; rebuild its code in a temporary folder (the recorded
commit with the recorded uncommitted diff applied, or the recorded archive; the user's working tree is never
touched); compare the environment and the data with the record and list the differences in one block; run
``dlrun rerun=RUN_ID`` there (``tasks/rerun_config.py``) with the recorded overrides, threads and numerics
environment variables, which records a new run tagged ``dlrun.rerun_of``; with ``--check``, compare its val/*
and test/* metrics with the recorded ones. Nothing is written to the recorded run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlrun.browse.run_files import read_text
from dlrun.errors import ConfigError, UserError
from dlrun.sweeping.threads import THREADS_PARAM
from dlrun.tasks.rerun_check import CHECKED_PREFIXES, LOOSE_TOLERANCE, check_metrics
from dlrun.tasks.rerun_config import RERUN_TAG

# Overrides of the record that describe the recorded job, not its config: this job sets its own (``trial.*``:
# the Optuna trial a search job ran as; a rerun is no trial of that study).
JOB_OVERRIDES = ("hydra.", "hydra/", "tracking.uri", "rerun", "resume", "ckpt", "task", "trial.")
# Numerics variables a rerun takes as recorded; which devices a machine shows is its own business.
MACHINE_ENV = ("CUDA_VISIBLE_DEVICES",)
SHOWN_DIFFERENCES = 8

EPILOG = """examples:
  dlrun rerun 3f2a9c1e                  the run again: its code, config, threads; a new run tagged dlrun.rerun_of
  dlrun rerun 3f2a9c1e --check          ... and compare val/* and test/* with the record (exit 1 if they differ)
  dlrun rerun 3f2a9c1e seed=2           ... with a change on top of the recorded config
  dlrun rerun 3f2a9c1e --dry-run        rebuild the code and list what differs from the record; no run
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``dlrun rerun`` command line."""
    from dlrun.browse.entry import Parser, add_store_option

    parser = Parser(
        prog="dlrun rerun",
        description="Run a recorded training run again from its record: code, config, environment, data.",
        epilog=EPILOG,
        raw_epilog=True,
    )
    parser.add_argument("run", metavar="RUN_ID", help="run id or its first 8+ digits")
    parser.add_argument("overrides", metavar="KEY=VALUE", nargs="*", help="changes on top of the recorded config")
    parser.add_argument("--check", action="store_true", help="compare val/* and test/* metrics with the record")
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="X",
        help=f"largest difference --check accepts (default: 0 when bit-exact is expected, else {LOOSE_TOLERANCE})",
    )
    parser.add_argument("--dry-run", action="store_true", help="rebuild the code and list the differences; no run")
    parser.add_argument("--keep", action="store_true", help="keep the rebuilt code folder (its path is printed)")
    add_store_option(parser)
    return parser


def rerun_main(argv: list[str]) -> int:
    """``dlrun rerun ...``: the new run's exit code; a bad input is one ``dlrun: error:`` line, exit 1 or 2."""
    from dlrun.browse.entry import guarded

    return guarded(lambda: rerun(build_parser().parse_intermixed_args(argv)))  # options anywhere


@dataclass
class Recorded:
    """The run to rerun, as its record has it: the run, its capsule files, recorded overrides and dataset inputs."""

    run: Any  # dlrun.browse.records.RunRecord
    capsule_dir: Path
    capsule: dict[str, Any]
    overrides: list[str]
    datasets: list[dict[str, str]]

    @property
    def run_id(self) -> str:
        """The full run id."""
        return str(self.run.run_id)


def rerun(args: argparse.Namespace) -> int:
    """Rebuild, compare, run, check: the whole command."""
    from dlrun.browse.store import open_reader, tracking_uri
    from dlrun.tracking.code_copy import rebuild_code

    here = Path.cwd()
    uri = tracking_uri(args.tracking_uri, here)  # the store must exist: reading never creates one
    with tempfile.TemporaryDirectory(prefix="dlrun-rerun-") as scratch:
        source = read_record(open_reader(uri, here), args.run, Path(scratch))
        if args.check and not any(k.startswith(CHECKED_PREFIXES) for k in source.run.metrics):
            raise ConfigError(f"--check: run {source.run_id} recorded no val/* or test/* metrics to compare with")
        folder = Path(tempfile.mkdtemp(prefix="dlrun-rerun-code-")) if args.keep else Path(scratch) / "code"
        copy = rebuild_code(source.capsule["code.json"], source.capsule_dir, folder, here)
        threads = recorded_threads(source, args.overrides)
        env = child_environment(source, here)
        command = child_overrides(source, args.overrides, uri, here, threads)
        print_block(source, copy, command, env, threads, args.overrides)
        if args.keep:
            print(f"  kept     {folder}")
        if args.dry_run:
            return 0
        started = int(time.time() * 1000)
        status = run_job(command, copy.workdir, env)
        if status != 0:
            return status  # the job said why in its own line: no new run, or one marked FAILED or KILLED
    reader = open_reader(uri, here)  # a fresh one: the job may have made an experiment
    new = find_new_run(reader, source, started)
    new_env = json.loads(read_text(reader, new, "capsule/environment.json") or "{}")
    print(f"rerun of {source.run_id[:8]}: new run {new.run_id} (tagged dlrun.rerun_of)")
    print(f"  env      {environment_line(source, new_env, 'new run')}")
    if not args.check:
        return 0
    return check_metrics(source.run, source.capsule.get("environment.json") or {}, new, new_env, args.tolerance)


def read_record(reader: Any, ref: str, scratch: Path) -> Recorded:
    """The run ``ref`` names with its capsule (read in place, or downloaded into ``scratch``); one line if not."""
    from dlrun.browse.run_files import local_root
    from dlrun.tracking.capsule import read_capsule

    run = reader.run(reader.resolve(ref, "run"))
    task = run.tags.get("dlrun.task", "train")
    if task != "train":
        raise ConfigError(f"run {run.run_id}: a {task} run; dlrun rerun runs training runs (its source run, perhaps)")
    root = local_root(run)
    folder = root / "capsule" if root is not None else scratch / "capsule"
    if root is None:
        try:
            reader.client().download_artifacts(run.run_id, "capsule", str(scratch))
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            pass
    capsule = read_capsule(folder)
    if "code.json" not in capsule:
        raise ConfigError(
            f"run {run.run_id}: no capsule/code.json (recorded with tracking.capsule=false, or by a dlrun before "
            "capsules); nothing says which code ran"
        )
    overrides = yaml.safe_load(read_text(reader, run, "overrides.yaml") or "null")
    if not isinstance(overrides, list):
        raise ConfigError(f"run {run.run_id}: no overrides.yaml artifact (not a dlrun training run?)")
    return Recorded(run, folder, capsule, [str(o) for o in overrides], reader.datasets(run.run_id))


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def recorded_threads(source: Recorded, overrides: list[str]) -> int | None:
    """The torch threads the run used (param ``resources.threads_used``); None when the user sets them."""
    if any(_key(o) == "resources.threads" for o in overrides):
        return None
    value = source.run.params.get(THREADS_PARAM) or (source.capsule.get("environment.json") or {}).get("torch", {}).get(
        "threads"
    )
    return int(value) if value else None


def child_overrides(source: Recorded, overrides: list[str], uri: str, here: Path, threads: int | None) -> list[str]:
    """``dlrun``'s command line for the new run: the recorded overrides, this job's keys, the user's on top."""
    mine = {_key(o) for o in overrides} | ({"resources.threads"} if threads is not None else set())
    kept = [o for o in source.overrides if not _key(o).startswith(JOB_OVERRIDES) and _key(o) not in mine]
    stamp = dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    job = [f"rerun={source.run_id}", f"tracking.uri={uri}", f"hydra.run.dir={_quoted(str(here / 'outputs' / stamp))}"]
    if threads is not None:
        job.append(f"resources.threads={threads}")
    return [*kept, *job, *overrides]


def _quoted(value: str) -> str:
    """A Hydra override value: as is when plain, else single-quoted with its quotes and backslashes escaped."""
    if re.fullmatch(r"[\w/.\-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def child_environment(source: Recorded, here: Path) -> dict[str, str]:
    """This process's environment with the recorded numerics variables (set or unset as recorded) and the
    working directory off ``PYTHONPATH`` (the rebuilt code is imported instead)."""
    from dlrun.tracking.capsule import NUMERIC_ENV

    env = dict(os.environ)
    recorded = (source.capsule.get("environment.json") or {}).get("env") or {}
    for name in NUMERIC_ENV:
        if name in MACHINE_ENV:
            continue
        if name in recorded:
            env[name] = str(recorded[name])
        else:
            env.pop(name, None)
    # The job puts its own folder (in the rebuilt code) first on the path, as the recorded job did.
    entries = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != here.resolve()]
    env["PYTHONPATH"] = os.pathsep.join(entries)
    return env


def print_block(
    source: Recorded, code: Any, command: list[str], env: dict[str, str], threads: int | None, mine: list[str]
) -> None:
    """What the rerun runs and how this machine differs from the record: one short block."""
    from dlrun.tracking.capsule import NUMERIC_ENV, environment_record

    run = source.run
    # torch is not imported here (seconds of start-up): its version is a distribution like any other, and
    # CUDA, devices and threads are compared with what the new run records once it ran.
    here = environment_record()
    here["env"] = {name: env[name] for name in NUMERIC_ENV if name in env}
    print(f"rerun of {run.run_id[:8]} {run.name} ({run.status}), recorded {_when(run)}")
    print(f"  code     {code.describe(source.capsule['code.json'])}")
    yours = f"; yours on top: {' '.join(mine)}" if mine else ""
    print(f"  config   the recorded config.yaml{yours}")
    dlrun_then, dlrun_now = run.tags.get("dlrun.source", "?"), _dlrun_source()
    same = "same" if dlrun_then == dlrun_now else f"different: recorded {dlrun_then}"
    print(f"  dlrun    {dlrun_now} ({same})")
    shown = f"{threads}, as recorded" if threads is not None else "as you set them (resources.threads)"
    print(f"  threads  {shown}; " + (", ".join(f"${k}={v}" for k, v in here["env"].items()) or "no numerics env vars"))
    for line in data_lines(source.datasets):
        print(f"  data     {line}")
    print(f"  env      {environment_line(source, here, 'here')}")
    print(f"  runs     dlrun {' '.join(command)}", flush=True)


def environment_line(source: Recorded, other: dict[str, Any], where: str) -> str:
    """Same, or what differs between the recorded environment and ``other`` (this machine, or the new run)."""
    from dlrun.tracking.capsule import environment_differences

    recorded = source.capsule.get("environment.json")
    if not recorded or not other:
        return "not compared (no capsule/environment.json)"
    differences = environment_differences(recorded, other)
    if not differences:
        torch = (other.get("torch") or {}).get("version") or other.get("distributions", {}).get("torch", "-")
        devices = ", ".join((other.get("torch") or {}).get("devices", [])) or "no GPU"
        extra = f", {devices}" if "torch" in other else ""
        return (
            f"same: python {other.get('python')}, torch {torch}{extra}, {len(other.get('distributions', {}))} packages"
        )
    listed = ", ".join(f"{d['key']} {d['a']} -> {d['b']}" for d in differences[:SHOWN_DIFFERENCES])
    more = f", ... {len(differences) - SHOWN_DIFFERENCES} more" if len(differences) > SHOWN_DIFFERENCES else ""
    return f"{len(differences)} different (recorded -> {where}): {listed}{more}"


def data_lines(datasets: list[dict[str, str]]) -> list[str]:
    """Each recorded dataset input checked against the files here (same, different, missing)."""
    from dlrun.tracking.datasets import DigestCache, recheck

    cache = DigestCache.load()
    lines = [
        f"{d['name']} {d['context'] or '-'} {d['digest']}: {recheck(d['source'], d['digest'], cache)}" for d in datasets
    ]
    cache.save()
    return lines or ["no dataset inputs recorded"]


def _dlrun_source() -> str:
    from dlrun.tracking.provenance import dlrun_source

    return dlrun_source()


def _when(run: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(run.start_ms / 1000)) if run.start_ms else "?"


def find_new_run(reader: Any, source: Recorded, started_ms: int) -> Any:
    """The run the job just recorded: tagged ``dlrun.rerun_of`` with the source's id, started after ``started_ms``."""
    experiments = reader.experiments()
    for ids in ([source.run.experiment_id], [i for i in experiments if i != source.run.experiment_id]):
        for run in reader.runs(ids):  # newest first
            if run.tags.get(RERUN_TAG) == source.run_id and (run.start_ms or 0) >= started_ms:
                return run
    raise UserError(f"rerun of {source.run_id}: the job ended well but recorded no run tagged {RERUN_TAG}")


def run_job(command: list[str], cwd: Path, env: dict[str, str]) -> int:
    """``python -m dlrun COMMAND`` in ``cwd``; Ctrl-C reaches it too (it marks its run KILLED), SIGTERM is passed on."""
    import signal

    with subprocess.Popen([sys.executable, "-m", "dlrun", *command], cwd=cwd, env=env) as job:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: job.send_signal(signum))
        try:
            while True:
                try:
                    return job.wait()
                except KeyboardInterrupt:  # the job got the same Ctrl-C: wait for it to close its run
                    continue
        finally:
            signal.signal(signal.SIGTERM, previous)
