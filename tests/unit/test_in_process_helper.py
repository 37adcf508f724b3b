"""``helpers.dlrun_in_process`` puts back everything a job run in this process could leave changed.

A stand-in job changes each kind of state ``helpers.process_state`` lists, then fails; after it, the state
is what it was, and the failure is the CLI's exit code and one line. (``tests/e2e/test_in_process_jobs.py``
does the same with real ``dlrun.run`` jobs.)
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import random
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from helpers import dlrun_in_process, process_state, state_changes

LIBRARY = "tests.a_library"  # a library's logger, there before the job (as mlflow's is once imported)
logging.getLogger(LIBRARY)


def assert_same_state(before: dict, after: dict) -> None:
    changed = state_changes(before, after)
    assert not changed, changed


def leaky_job(folder: Path, seen: dict) -> None:
    """Changes every kind of process state a dlrun job touches (and more), then fails as a job can."""
    os.chdir(folder.parent)
    sys.argv.append("--leaked")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    os.environ["DLRUN_LEAKED"] = "1"
    os.environ.pop("DLRUN_DATA_DIR", None)
    sys.path.insert(0, str(folder))
    torch.set_num_threads(1 if torch.get_num_threads() != 1 else 2)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, lambda *_: None)
    logging.getLogger().addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger(LIBRARY).setLevel(logging.CRITICAL)
    logging.getLogger(LIBRARY).propagate = False
    logging.getLogger(LIBRARY).disabled = True
    logging.getLogger(LIBRARY).addFilter(logging.Filter("nothing"))
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    (folder / "users_module.py").write_text("VALUE = 1\n")
    importlib.import_module("users_module")  # a user's module, imported by _target_ from the job's folder

    seen["state"] = process_state()
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    print("written by the job")
    raise ValueError("broken\nin two lines")


def test_a_job_that_changes_everything_leaves_nothing_changed(tmp_path: Path) -> None:
    before, seen = process_state(), {}
    result = dlrun_in_process(["model=nope"], tmp_path, runner=lambda args: leaky_job(tmp_path, seen))
    after = process_state()
    assert_same_state(before, after)
    assert "users_module" not in sys.modules
    # The stand-in job did change each of them while it ran: the comparison above can see each kind.
    during = seen["state"]
    assert {k for k in before if k not in ("stdout/stderr", "hydra", "mlflow") and before[k] != during[k]} == {
        k for k in before if k not in ("stdout/stderr", "hydra", "mlflow")
    }
    # What the command would say: exit 1, one line, the cause named, traceback kept for the test's report.
    assert result.returncode == 1 and result.args == ["model=nope"] and result.cwd == tmp_path
    assert result.error == "ValueError: broken in two lines (set HYDRA_FULL_ERROR=1 for the traceback)"
    assert result.stderr.splitlines()[-1] == f"dlrun: error: {result.error}"
    assert "raise ValueError" in result.traceback


def test_the_job_sees_the_commands_environment_and_folder(tmp_path: Path, monkeypatch) -> None:
    """As ``helpers.dlrun`` gives a process: ``dlrun_env`` (no outside store), the folder as working directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nowhere/outside.db")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    seen = {}

    def job(args: list[str]) -> str:
        seen.update(cwd=os.getcwd(), env=dict(os.environ), args=args)
        print("out")
        print("err", file=sys.stderr)
        return "result"

    result = dlrun_in_process(["a=1"], tmp_path, env={"EXTRA": "x"}, runner=job)
    assert seen["cwd"] == str(tmp_path) and seen["args"] == ["a=1"]
    assert "MLFLOW_TRACKING_URI" not in seen["env"] and "HYDRA_FULL_ERROR" not in seen["env"]
    assert seen["env"]["EXTRA"] == "x" and seen["env"]["DLRUN_DATA_DIR"]
    assert (result.returncode, result.stdout, result.stderr, result.error_lines) == (0, "out\n", "err\n", [])
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////nowhere/outside.db"
