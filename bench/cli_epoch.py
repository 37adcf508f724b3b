"""The ``dlrun`` command as users run it: one MNIST MLP epoch, its logged samples/s and peak memory,
against the independent hand-written loop (``bench/reference_loop.py``, no dlrun code) in its own process.

    python bench/cli_epoch.py                               # full epoch, 5 alternating repeats
    python bench/cli_epoch.py --batches 5 --repeats 1

dlrun side: ``dlrun experiment=mnist_mlp trainer.max_epochs=1 data.batch_size=128`` (plus a scratch MLflow
store) in a fresh process; its ``train/samples_per_s`` is read back from MLflow, its peak resident set
size (the process and its children) from ``wait4``. The same command also runs with a pseudo-terminal as
its output, as in an interactive shell, where dlrun draws its progress bar: once as shipped (redrawn every
10 steps) and once redrawn after every step, as Lightning's stock bar does. Hand side:
``python bench/reference_loop.py``. All get the same ``OMP_NUM_THREADS``; they alternate, and medians are
reported.
"""

from __future__ import annotations

import argparse
import os
import pty
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, data_dir, dlrun_bin, emit, machine, median, set_threads, size_args

COMMAND = ["experiment=mnist_mlp", "trainer.max_epochs=1", "data.batch_size=128"]
REFERENCE = ROOT / "bench" / "reference_loop.py"  # the hand loop, run as a script


def run_measured(argv: list[str], cwd: Path) -> tuple[str, float, float]:
    """Run ``argv``; return its stdout, wall seconds and peak RSS in MiB (``ru_maxrss`` of this child)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed (exit {proc.returncode}):\n{text[-3000:]}")
    return text, wall, usage.ru_maxrss / 1024  # Linux reports KiB


def run_in_terminal(argv: list[str], cwd: Path) -> None:
    """Run ``argv`` with a pseudo-terminal as stdout and stderr (so it draws its progress bar); drain its output."""
    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "TERM": os.environ.get("TERM", "xterm"), "COLUMNS": "120"}
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=child_fd, stderr=child_fd, env=env)
    os.close(child_fd)
    tail = b""
    while True:
        try:
            data = os.read(main_fd, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        tail = (tail + data)[-3000:]
    os.close(main_fd)
    if proc.wait() != 0:
        output = tail.decode(errors="replace")
        sys.exit(f"bench: {' '.join(argv)} failed in a terminal (exit {proc.returncode}):\n{output}")


def logged_samples_per_s(uri: str) -> float:
    """``train/samples_per_s`` of the newest run in the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1)
    return run.data.metrics["train/samples_per_s"]


def main() -> None:
    """Alternate ``dlrun`` and the independent hand loop; print samples/s, the ratio, peak RSS, wall time."""
    parser = size_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), batches=0, repeats=5)
    parser.add_argument("overrides", nargs="*", help="extra dlrun overrides (the smoke test trims validation and test)")
    args = parser.parse_args()
    set_threads(args.threads)  # inherited by both child processes through OMP_NUM_THREADS
    os.environ["DLRUN_DATA_DIR"] = str(data_dir())
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    limit = [f"trainer.limit_train_batches={args.batches}"] if args.batches else []
    hand_limit = ["--batches", str(args.batches)] if args.batches else []

    runs: dict[str, list[float]] = {"dlrun": [], "hand": [], "dlrun_peak_rss_mib": [], "dlrun_wall_s": []}
    terminal = {"dlrun_terminal": [], "dlrun_terminal_every_step": ["callbacks.progress_every_n_steps=1"]}
    runs.update({side: [] for side in terminal})
    with tempfile.TemporaryDirectory(prefix="dlrun-bench-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        dlrun_argv = [dlrun_bin(), *COMMAND, *limit, *args.overrides, f"tracking.uri={uri}"]
        for repeat in range(args.repeats):
            _, wall, rss = run_measured(dlrun_argv, Path(tmp))
            runs["dlrun"].append(logged_samples_per_s(uri))
            runs["dlrun_peak_rss_mib"].append(rss)
            runs["dlrun_wall_s"].append(wall)
            for side, extra in terminal.items():
                run_in_terminal([*dlrun_argv, *extra], Path(tmp))
                runs[side].append(logged_samples_per_s(uri))
            text, _, _ = run_measured([sys.executable, str(REFERENCE), *hand_limit], Path(tmp))
            runs["hand"].append(float(text.split("samples_per_s")[-1]))
            sides = "  ".join(f"{side} {runs[side][-1]:.0f}" for side in ("dlrun", *terminal, "hand"))
            dlrun_cost = f"dlrun peak RSS {rss:.0f} MiB, wall {wall:.1f} s"
            print(f"repeat {repeat + 1}: {sides} samples/s  {dlrun_cost}", flush=True)
    result: dict[str, Any] = {
        "machine": machine(),
        "command": "dlrun " + " ".join([*COMMAND, *limit, *args.overrides]),
        "dlrun_samples_per_s": median(runs["dlrun"]),
        "hand_samples_per_s": median(runs["hand"]),
        "ratio": median([d / h for d, h in zip(runs["dlrun"], runs["hand"], strict=True)]),
        "dlrun_peak_rss_mib": median(runs["dlrun_peak_rss_mib"]),
        "dlrun_wall_s": median(runs["dlrun_wall_s"]),
        "runs": runs,
    }
    for side in terminal:
        result[f"{side}_samples_per_s"] = median(runs[side])
        result[f"{side}_ratio"] = median([d / h for d, h in zip(runs[side], runs["hand"], strict=True)])
    result["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)


if __name__ == "__main__":
    main()
