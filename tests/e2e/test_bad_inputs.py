"""A catalogue of bad inputs, each tried as a new user would: the installed ``dlrun`` command in a fresh folder.

Every case asserts what the README's "Errors and exit codes" section promises:
- the exit code (2 for config errors, 1 for other bad input);
- stderr is exactly one line, ``dlrun: error: <culprit>: <fault>``, naming the key or the file at fault;
- no traceback and no ANSI escape codes in it (with a plain environment: no NO_COLOR, no TERM tricks);
- the MLflow record: no new run for config errors, a FAILED run tagged ``dlrun.error`` (the same line) for
  faults found once the run has opened, and the run recorded before the bad input untouched.

Two ways to run a case. ``SUBPROCESS`` cases run the installed console script, two at a time: every case
Hydra refuses before torch is imported (under a second each), and one or more of each kind that costs a
torch start-up (a value check, the tracking URI checks, a checkpoint, a data fault after the run opened, a
text file, tracking off, the predict command), because only a process shows its exit status, that stderr
is the one line, with no traceback, ANSI code or third-party log line in it. The other cases run in this
process (``helpers.dlrun_in_process``: ``dlrun.run`` and the CLI's own ``describe_error``), meanwhile; they
keep every other assertion. The slow ``test_in_process_cases_match_the_command`` runs those by the command
too and requires the same code and line. The few cases that must train first are marked slow.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import (
    MNIST,
    MNIST_FILES,
    MULTI30K,
    Result,
    dlrun_env,
    dlrun_in_process,
    process_state,
    state_changes,
    text_args,
)

DLRUN = Path(sys.executable).parent / "dlrun"  # the console script pip installed, as users run it
CASE_TIMEOUT = 150  # seconds; every case fails within ~30 s when dlrun keeps its promise
SHORT = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
EARLIER = "earlier-run"  # the run each store holds before the bad input
EARLIER_METRIC = 0.625
ANSI = re.compile(r"\x1b\[")


@dataclass
class Case:
    """One bad input: command-line arguments (``{cwd}``, ``{ro}`` and ``{store}`` filled in), what must come out."""

    args: list[str]
    code: int
    culprit: str  # regex the error line must start with: the key or file at fault
    run: str = "none"  # "none": no new MLflow run; "FAILED"/"KILLED": one new run with that status
    setup: Callable[[Path], None] | None = None  # prepares files in the case's folder
    tracking: bool = True  # False: tracking=none, and no store may appear at all
    wrap: str | None = None  # "read_only_store": the store's folder is made read-only around the command
    needs: str = ""  # why this case may fail before the task-layer rewrite lands (report only)


# ---------------------------------------------------------------- set-ups


def _random_bytes(cwd: Path) -> None:
    (cwd / "random.ckpt").write_bytes(bytes(range(256)) * 20)


def _truncated_checkpoint(cwd: Path) -> None:
    import torch

    torch.save({"state_dict": {"w": torch.zeros(50_000)}}, cwd / "whole.ckpt")
    data = (cwd / "whole.ckpt").read_bytes()
    (cwd / "last.ckpt").write_bytes(data[: len(data) // 2])


def _mnist_with_truncated_labels(cwd: Path) -> None:
    folder = cwd / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in MNIST_FILES:
        (folder / name).symlink_to(MNIST / name)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    labels = gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels[:-10], mtime=0))  # the same bytes each time


def _empty_data(cwd: Path) -> None:
    (cwd / "empty").mkdir()


def _misaligned_corpus(cwd: Path) -> None:
    (cwd / "short.en").write_text("a man .\na dog .\n", encoding="utf-8")


def _latin1_corpus(cwd: Path) -> None:
    (cwd / "bad.de").write_bytes(b"ein mann .\n" + "ein gr\xfcner raum .\n".encode("latin-1"))


RUN_ID = "0123456789abcdef0123456789abcdef"
BEFORE_RUN = "config checks before the run opens (task-layer rewrite)"

# Cheapest first: Hydra refuses these before dlrun imports Lightning or MLflow.
CASES: dict[str, Case] = {
    # -- config groups and keys (Hydra composition)
    "no_such_model": Case(["model=nope"], 2, r"model=nope: no such model; available: "),
    "no_such_data": Case(["data=nope"], 2, r"data=nope: no such data; available: "),
    "no_such_optimizer": Case(["optimizer=nope"], 2, r"optimizer=nope: no such optimizer"),
    "no_such_scheduler": Case(["scheduler=nope"], 2, r"scheduler=nope: no such scheduler"),
    "no_such_trainer": Case(["trainer=nope"], 2, r"trainer=nope: no such trainer"),
    "no_such_tracking": Case(["tracking=nope"], 2, r"tracking=nope: no such tracking"),
    "no_such_experiment": Case(["experiment=nope"], 2, r"experiment=nope: no such experiment"),
    "no_such_objective": Case(["objective=nope"], 2, r"objective=nope: no such objective"),
    "typo_in_key": Case(["optimizer.lrr=1"], 2, r"optimizer\.lrr: unknown key \(did you mean optimizer\.lr\?\)"),
    "broken_override": Case(["optimizer.lr=[1,"], 2, r"optimizer\.lr=\[1,: cannot parse this override"),
    "missing_text_paths": Case(["data=text", "model=seq2seq"], 2, r"data\.train_src: missing mandatory value"),
    # -- config values (types and ranges): refused before any data is read or any run opens
    "no_such_task": Case(["task=foo"], 2, r"task: 'foo' is not one of "),
    "new_key": Case(["+model.foo=1"], 2, r"model\.foo: unknown key", needs=BEFORE_RUN),
    "lr_not_float": Case(["optimizer.lr=abc"], 2, r"optimizer\.lr: expected float", needs=BEFORE_RUN),
    "lr_negative": Case(["optimizer.lr=-0.1"], 2, r"optimizer\.lr: ", needs=BEFORE_RUN),
    "batch_size_text": Case(["data.batch_size=abc"], 2, r"data\.batch_size: expected int", needs=BEFORE_RUN),
    "batch_size_zero": Case(["data.batch_size=0"], 2, r"data\.batch_size: must be >= 1, got 0", needs=BEFORE_RUN),
    "dropout_above_one": Case(
        ["model.dropout=1.5"], 2, r"model\.dropout: must be in \[0, 1\), got 1\.5", needs=BEFORE_RUN
    ),
    "precision_nonsense": Case(["trainer.precision=nonsense"], 2, r"trainer\.precision: ", needs=BEFORE_RUN),
    "label_smoothing_two": Case(
        ["objective.label_smoothing=2"], 2, r"objective\.label_smoothing: must be in \[0, 1\)", needs=BEFORE_RUN
    ),
    "batching_nonsense": Case(
        ["experiment=multi30k_gru_attn", "data.batching=nonsense"],
        2,
        r"data\.batching: expected one of ",
        needs=BEFORE_RUN,
    ),
    "epochs_forever": Case(["trainer.max_epochs=-1"], 2, r"trainer\.max_epochs: -1 trains forever", needs=BEFORE_RUN),
    "plateau_factor": Case(["scheduler=plateau", "scheduler.factor=2"], 2, r"scheduler\.factor: ", needs=BEFORE_RUN),
    "sgd_momentum": Case(["optimizer=sgd", "optimizer.momentum=-1"], 2, r"optimizer\.momentum: ", needs=BEFORE_RUN),
    "cnn_kernel_sizes": Case(
        ["model=cnn", "model.kernel_sizes=[3]"], 2, r"model\.kernel_sizes: need one per conv layer", needs=BEFORE_RUN
    ),
    "class_weights_count": Case(
        ["objective.class_weights=[1,2]"], 2, r"objective\.class_weights: need 10 weights, got 2", needs=BEFORE_RUN
    ),
    "seq2seq_on_mnist": Case(
        ["model=seq2seq", "data=mnist"], 2, r"model: .*Seq2Seq needs src_vocab_size", needs=BEFORE_RUN
    ),
    "devices_zero": Case(["trainer.devices=0"], 2, r"trainer\.devices: ", needs=BEFORE_RUN),
    "no_tpu": Case(["trainer.accelerator=tpu"], 2, r"trainer(\.accelerator)?: ", needs=BEFORE_RUN),
    "summary_bad_value": Case(
        ["task=summary", "model.dropout=2"], 2, r"model\.dropout: must be in \[0, 1\)", needs=BEFORE_RUN
    ),
    "tracking_off_bad_value": Case(
        ["tracking=none", "model.dropout=2"], 2, r"model\.dropout: ", tracking=False, needs=BEFORE_RUN
    ),
    # -- where runs are kept and written
    "file_store": Case(["tracking.uri=file:///tmp/mlruns"], 2, r"tracking\.uri: 'file:///tmp/mlruns' is not supported"),
    "unreachable_server": Case(
        ["tracking.uri=http://127.0.0.1:9"], 1, r"tracking\.uri: cannot reach MLflow server at http://127\.0\.0\.1:9"
    ),
    "store_in_read_only_folder": Case(["tracking.uri=sqlite:///{ro}/new.db"], 2, r"tracking\.uri: .*{ro}"),
    "run_dir_read_only": Case(["hydra.run.dir={ro}/run"], 2, r"hydra\.run\.dir: cannot write {ro}"),
    "run_dir_under_a_file": Case(["hydra.run.dir=/dev/null/run"], 2, r"hydra\.run\.dir: cannot write /dev/null/run"),
    "existing_store_read_only": Case(
        [], 2, r"tracking\.uri: the (folder of the )?SQLite store .* is not writable", wrap="read_only_store"
    ),
    # -- checkpoints named by ckpt= / resume=
    "eval_without_ckpt": Case(["task=eval"], 2, r"ckpt: task=eval needs "),
    "eval_missing_file": Case(
        ["task=eval", "ckpt={cwd}/nowhere.ckpt"], 1, r"ckpt={cwd}/nowhere\.ckpt: no such checkpoint file"
    ),
    "eval_random_bytes": Case(
        ["task=eval", "ckpt={cwd}/random.ckpt"], 1, r"ckpt={cwd}/random\.ckpt: not a checkpoint \(", setup=_random_bytes
    ),
    "predict_truncated": Case(
        ["task=predict", "ckpt={cwd}/last.ckpt"], 1, r"ckpt={cwd}/last\.ckpt: truncated", setup=_truncated_checkpoint
    ),
    "resume_truncated": Case(
        ["resume={cwd}/last.ckpt"], 1, r"resume={cwd}/last\.ckpt: truncated", setup=_truncated_checkpoint
    ),
    "eval_unknown_run_id": Case(["task=eval", f"ckpt={RUN_ID}"], 1, rf"ckpt={RUN_ID}: no MLflow run with this id"),
    # -- data files: found once the run has opened (the data module reads them), so the run is marked FAILED
    "mnist_missing_no_download": Case(
        ["paths.data_dir={cwd}/empty", "data.download=false"],
        1,
        r"{cwd}/empty/mnist: missing ",
        "FAILED",
        setup=_empty_data,
    ),
    "mnist_missing_tracking_off": Case(
        ["tracking=none", "paths.data_dir={cwd}/empty", "data.download=false"],
        1,
        r"{cwd}/empty/mnist: missing ",
        setup=_empty_data,
        tracking=False,
    ),
    "mnist_truncated_labels": Case(
        ["paths.data_dir={cwd}/data"],
        1,
        r"{cwd}/data/mnist/t10k-labels-idx1-ubyte\.gz: ",
        "FAILED",
        setup=_mnist_with_truncated_labels,
    ),
    "text_missing_file": Case(
        text_args("{cwd}/nowhere.de", str(MULTI30K / "val.en.gz")), 1, r"{cwd}/nowhere\.de: ", "FAILED"
    ),
    "text_misaligned": Case(
        text_args(str(MULTI30K / "val.de.gz"), "{cwd}/short.en"),
        1,
        r".*{cwd}/short\.en",
        "FAILED",
        setup=_misaligned_corpus,
    ),
    "text_not_utf8": Case(
        text_args("{cwd}/bad.de", str(MULTI30K / "val.en.gz")), 1, r"{cwd}/bad\.de:2: ", "FAILED", setup=_latin1_corpus
    ),
}


# ---------------------------------------------------------------- running a case

# Run by the console script: every case refused before torch is imported (< 1 s each), and for each kind of
# fault that needs the heavy imports, at least one representative (see the module docstring).
CHEAP = {name for name in CASES if name.startswith("no_such_") and name != "no_such_task"} | {
    "typo_in_key",
    "broken_override",
    "run_dir_read_only",
    "run_dir_under_a_file",
}
SUBPROCESS = CHEAP | {
    "lr_not_float",  # a value check (Lightning and the data module imported)
    "tracking_off_bad_value",  # the same with tracking off: no store
    "file_store",
    "unreachable_server",
    "existing_store_read_only",  # needs its own mount namespace (unshare) around the command
    "eval_random_bytes",  # the eval command on a file that is no checkpoint
    "predict_truncated",  # the predict command
    "mnist_missing_no_download",  # a fault found after the run opened: a FAILED run
    "text_not_utf8",  # the text data module's fault, file:line
}
IN_PROCESS = [name for name in CASES if name not in SUBPROCESS]


def read_only_folder(cwd: Path) -> Path:
    """A folder no file can be created in: a chmod'ed one, or for root (who ignores modes) one in sysfs."""
    if os.geteuid() == 0:
        return Path("/sys/dlrun-read-only")
    folder = cwd / "ro"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder


def can_remount_read_only() -> bool:
    """Root may bind-mount a folder read-only in a private mount namespace (a real read-only file system)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


def seed_store(template: Path, cwd: Path) -> None:
    """Copy the store that already holds one FINISHED run into the case's folder."""
    shutil.copy(template, cwd / "m.db")


@pytest.fixture(scope="module")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store with one FINISHED run (experiment ``mnist``), as a user's store holds earlier work."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("template")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'm.db'}")
    experiment = client.create_experiment("mnist", artifact_location=(folder / "mlartifacts").as_uri())
    run = client.create_run(experiment, run_name=EARLIER)
    client.log_metric(run.info.run_id, "test/acc", EARLIER_METRIC)
    client.set_terminated(run.info.run_id, "FINISHED")
    EARLIER_RECORD["template"] = earlier_record(folder / "m.db")
    return folder / "m.db"


EARLIER_RECORD: dict[str, tuple] = {}  # the earlier run as the template store holds it


def earlier_record(store: Path) -> tuple:
    """The earlier run's whole record: status, end time, params, tags, metric histories, artifacts folder."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    [run] = [r for r in runs_in(store) if r.info.run_name == EARLIER]
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in run.data.metrics}
    return (run.info.status, run.info.end_time, run.data.params, run.data.tags, history, run.info.artifact_uri)


def fill(text: str, cwd: Path, ro: Path) -> str:
    return text.replace("{cwd}", str(cwd)).replace("{ro}", str(ro)).replace("{store}", str(cwd / "m.db"))


@dataclass
class Prepared:
    """A case's folder with its files and store in place, and the command line that runs it."""

    cwd: Path
    args: list[str]
    command: list[str]


def prepare(name: str, case: Case, root: Path, template: Path) -> Prepared:
    cwd = root / name
    cwd.mkdir(parents=True)
    ro = read_only_folder(cwd)
    if case.setup:
        case.setup(cwd)
    args = [fill(a, cwd, ro) for a in case.args]
    if case.tracking:
        seed_store(template, cwd)
        if not any(a.startswith("tracking.uri=") for a in args):
            args.append(f"tracking.uri=sqlite:///{cwd / 'm.db'}")
    # Should a check not fire, the run that starts trains a few batches, not whole epochs.
    args += [a for a in SHORT if a.split("=")[0] not in {x.split("=")[0] for x in args}]
    command = [str(DLRUN), *args]
    if case.wrap == "read_only_store":
        store_dir = cwd / "store"
        store_dir.mkdir()
        shutil.move(str(cwd / "m.db"), store_dir / "m.db")
        args = [a.replace(str(cwd / "m.db"), str(store_dir / "m.db")) for a in args]
        command = [str(DLRUN), *args]
        if can_remount_read_only():
            mount = f"mount --bind {store_dir} {store_dir} && mount -o remount,bind,ro {store_dir} {store_dir}"
            command = ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]
        else:
            (store_dir / "m.db").chmod(0o444)
            store_dir.chmod(0o555)
    return Prepared(cwd, args, command)


def run_command(job: Prepared, env: dict[str, str]) -> Result:
    try:
        proc = subprocess.run(job.command, cwd=job.cwd, env=env, capture_output=True, text=True, timeout=CASE_TIMEOUT)
    except subprocess.TimeoutExpired as err:  # e.g. a refusal that did not happen and a run that trains on
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return Result(job.args, job.cwd, 124, out, f"(still running after {CASE_TIMEOUT} s: killed by the test)")
    return Result(job.args, job.cwd, proc.returncode, proc.stdout, proc.stderr)


def run_cases(root: Path, template: Path, by_command: list[str], in_process: list[str]) -> dict[str, Result]:
    """The command cases two at a time in worker threads while this thread runs the in-process ones."""
    jobs = {name: prepare(name, CASES[name], root, template) for name in [*by_command, *in_process]}
    env = dlrun_env()  # taken before any in-process job changes this process's environment
    with ThreadPoolExecutor(max_workers=2) as pool:  # cheap cases first: CASES is in that order
        futures = {name: pool.submit(run_command, jobs[name], env) for name in by_command}
        results = {name: dlrun_in_process(jobs[name].args, jobs[name].cwd) for name in in_process}
        return {**{name: future.result() for name, future in futures.items()}, **results}


STATES: dict[str, dict] = {}  # this process's state before and after the cases (helpers.process_state)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, template_store: Path) -> dict[str, Result]:
    root = tmp_path_factory.mktemp("bad_inputs")
    STATES["before"] = process_state()
    results = run_cases(root, template_store, [n for n in CASES if n in SUBPROCESS], IN_PROCESS)
    STATES["after"] = process_state()
    return results


def test_the_in_process_cases_left_this_process_as_it_was(outcomes: dict[str, Result]) -> None:
    """Working directory, environment, sys.path, threads, signal handlers, logging, random state: as before."""
    assert not state_changes(STATES["before"], STATES["after"])


def runs_in(store: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def assert_one_plain_line(result: Result, code: int, culprit: str) -> str:
    """A process's outcome: the exit code, and stderr exactly one plain ``dlrun: error:`` line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.describe()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: "), result.describe()
    assert "Traceback" not in result.stderr and not ANSI.search(result.stderr + result.stdout), result.describe()
    error = lines[0].removeprefix("dlrun: error: ")
    assert re.match(culprit, error), f"{error!r} does not start with {culprit!r}"
    return error


def assert_in_process_line(result: Result, code: int, culprit: str) -> str:
    """An in-process outcome: the code and the one line the CLI would print (other stderr is not the CLI's)."""
    assert result.returncode == code, result.describe()
    error = result.error  # exactly one ``dlrun: error:`` line
    assert "Traceback" not in error and not ANSI.search(error), result.describe()
    assert re.match(culprit, error), f"{error!r} does not start with {culprit!r}"
    return error


def check_case(name: str, result: Result, by_command: bool) -> str:
    """Every promise of the module docstring for one case's outcome; returns its error line."""
    case = CASES[name]
    ro = read_only_folder(result.cwd)
    check = assert_one_plain_line if by_command else assert_in_process_line
    error = check(result, case.code, fill(case.culprit, result.cwd, ro))
    assert not list(result.cwd.rglob("*.ckpt.part")) and not list(result.cwd.rglob(".*.part"))
    if not case.tracking:
        assert not list(result.cwd.rglob("*.db")) and not (result.cwd / "mlruns").exists()
        return error
    store = result.cwd / ("store" if case.wrap else "") / "m.db"
    runs = runs_in(store)
    earlier = [r for r in runs if r.info.run_name == EARLIER]
    assert len(earlier) == 1 and earlier[0].info.status == "FINISHED", "the earlier run was touched"
    assert earlier[0].data.metrics == {"test/acc": EARLIER_METRIC}
    # status, end time, params, tags and every metric value exactly as before the bad input
    assert earlier_record(store) == EARLIER_RECORD["template"], f"{name}: the earlier run's record changed"
    new = [r for r in runs if r.info.run_name != EARLIER]
    if case.run == "none":
        assert new == [], f"{name}: a run was opened for a config error: {[r.info.status for r in new]}"
    else:
        assert len(new) == 1 and new[0].info.status == case.run, [r.info.status for r in new]
        assert new[0].data.tags["dlrun.error"].endswith(error)
    return error


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(outcomes: dict[str, Result], name: str) -> None:
    check_case(name, outcomes[name], by_command=name in SUBPROCESS)


def test_every_kind_of_fault_is_also_run_by_the_command() -> None:
    """The subprocess subset keeps a case of each exit code, of a FAILED run, of tracking off and of each command."""
    by_command = [CASES[name] for name in SUBPROCESS]
    assert {c.code for c in by_command} == {1, 2}
    assert any(c.run == "FAILED" for c in by_command) and any(not c.tracking for c in by_command)
    assert {"task=eval", "task=predict"} <= {a for c in by_command for a in c.args}
    assert all(CASES[name].wrap is None for name in IN_PROCESS)  # a wrapped command cannot run in-process


@pytest.mark.slow
def test_in_process_cases_match_the_command(tmp_path: Path, template_store: Path) -> None:
    """Each in-process case by the console script too: all promises hold, with the same code and line."""
    by_command = run_cases(tmp_path / "command", template_store, IN_PROCESS, [])
    in_process = run_cases(tmp_path / "in_process", template_store, [], IN_PROCESS)
    differ = {}
    for name in IN_PROCESS:
        command_line = check_case(name, by_command[name], by_command=True)
        line = check_case(name, in_process[name], by_command=False)
        folders = (str(by_command[name].cwd), str(in_process[name].cwd))
        if (by_command[name].returncode, command_line) != (in_process[name].returncode, line.replace(*folders[::-1])):
            differ[name] = (by_command[name].returncode, command_line, in_process[name].returncode, line)
    assert not differ, differ


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) + len(SLOW_CASES) >= 40


# ---------------------------------------------------------------- cases that train first (slow)

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
SLOW_CASES = (
    "full_disk_while_checkpointing",
    "nan_loss",
    "class_weights_train_and_eval",
    "predict_bad_input",
    "eval_bad_split",
)


def dlrun_in(cwd: Path, args: list[str], preexec: Callable[[], None] | None = None) -> Result:
    proc = subprocess.run(
        [str(DLRUN), *args], cwd=cwd, env=dlrun_env(), capture_output=True, text=True, timeout=900, preexec_fn=preexec
    )
    return Result(args, cwd, proc.returncode, proc.stdout, proc.stderr)


def limit_file_size() -> None:
    """A full disk, as the process sees it: writes past 8 MB fail (EFBIG) instead of killing it (SIGXFSZ)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8_000_000, 8_000_000))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny finished run with every list-valued classification key set (class weights among them)."""
    cwd = tmp_path_factory.mktemp("trained")
    args = [
        *TINY,
        "objective.class_weights=[1,1,1,1,1,1,1,1,1,2]",
        "model.hidden_sizes=[32,16]",
        "optimizer.betas=[0.8,0.99]",
        f"tracking.uri=sqlite:///{cwd / 'm.db'}",
        "tracking.log_model=false",
    ]
    result = dlrun_in(cwd, args)
    assert result.returncode == 0, result.describe()
    [run] = runs_in(cwd / "m.db")
    return cwd, run.info.run_id


@pytest.mark.slow
def test_class_weights_train_test_and_evaluate_from_the_run_id(trained: tuple[Path, str]) -> None:
    import torch

    cwd, run_id = trained
    [run] = runs_in(cwd / "m.db")
    assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
    for path in cwd.rglob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
        assert checkpoint["hyper_parameters"]["class_weights"] == [1, 1, 1, 1, 1, 1, 1, 1, 1, 2]
    result = dlrun_in(
        cwd, ["task=eval", f"ckpt={run_id}", f"tracking.uri=sqlite:///{cwd / 'm.db'}", "trainer.limit_test_batches=1"]
    )
    assert result.returncode == 0, result.describe()


@pytest.mark.slow
def test_predict_with_a_missing_input_names_it(trained: tuple[Path, str]) -> None:
    cwd, run_id = trained
    result = dlrun_in(
        cwd, ["task=predict", f"ckpt={run_id}", f"input={cwd / 'nowhere'}", f"tracking.uri=sqlite:///{cwd / 'm.db'}"]
    )
    assert_one_plain_line(result, 1 if result.returncode == 1 else 2, rf"input(={re.escape(str(cwd))}/nowhere)?: ")


@pytest.mark.slow
def test_eval_on_a_split_that_does_not_exist(trained: tuple[Path, str]) -> None:
    cwd, run_id = trained
    result = dlrun_in(cwd, ["task=eval", f"ckpt={run_id}", "split=nope", f"tracking.uri=sqlite:///{cwd / 'm.db'}"])
    assert_one_plain_line(result, 2, r"split: 'nope' is not one of ")


@pytest.mark.slow
def test_full_disk_while_checkpointing_leaves_no_torn_file(tmp_path: Path, template_store: Path) -> None:
    seed_store(template_store, tmp_path)
    args = [*TINY, "model.hidden_sizes=[1024,1024]", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"]
    result = dlrun_in(tmp_path, args, preexec=limit_file_size)
    error = assert_one_plain_line(
        result, 1, rf"{re.escape(str(tmp_path))}/outputs/.*/checkpoints/\w+\.ckpt: cannot write checkpoint \("
    )
    for path in tmp_path.rglob("*.ckpt"):  # whatever is there loads whole
        import torch

        torch.load(path, map_location="cpu", weights_only=True)
    new = [r for r in runs_in(tmp_path / "m.db") if r.info.run_name != EARLIER]
    assert len(new) == 1 and new[0].info.status == "FAILED"
    assert new[0].data.tags["dlrun.error"].endswith(error)


@pytest.mark.slow
def test_nan_loss_stops_the_run(tmp_path: Path, template_store: Path) -> None:
    seed_store(template_store, tmp_path)
    args = [
        *TINY,
        "optimizer=sgd",
        "optimizer.lr=1e12",
        "optimizer.momentum=0",
        "trainer.limit_train_batches=20",
        f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
    ]
    result = dlrun_in(tmp_path, args)
    error = assert_one_plain_line(result, 1, r".*(loss|finite)")
    new = [r for r in runs_in(tmp_path / "m.db") if r.info.run_name != EARLIER]
    assert len(new) == 1 and new[0].info.status == "FAILED"
    assert new[0].data.tags["dlrun.error"].endswith(error)
