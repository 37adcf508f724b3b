"""Whole presets on one GPU: training time on the card, peak memory and the test metric, each in a fresh process.

    python bench/gpu/presets.py --json bench/results/gpu/presets.json  # mnist_cnn fp32/bf16+compiled, multi30k_gru_attn
    python bench/gpu/presets.py --only mnist_cnn --json /tmp/p.json
    python bench/gpu/presets.py --smoke                                # one tiny mnist_cnn run on the CPU

Each run is ``dlrun experiment=PRESET trainer=gpu tracking=none ...`` (no MLflow) through dlrun's console
entry point, with one extra callback that times ``fit`` from the start of training to its end (epochs and
their validations; not start-up, data loading or the final test). The test metrics are those dlrun prints
after testing the best checkpoint.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py
from common import data_dir, emit, machine  # noqa: E402

# name -> dlrun overrides (after experiment=...); the issue-15 targets are in docs/gpu.md
RUNS: dict[str, list[str]] = {
    "mnist_cnn": ["experiment=mnist_cnn", "trainer=gpu"],
    "mnist_cnn bf16 compiled": [
        "experiment=mnist_cnn",
        "trainer=gpu",
        "trainer.precision=bf16-mixed",
        "compile.enabled=true",
    ],
    "multi30k_gru_attn": ["experiment=multi30k_gru_attn", "trainer=gpu"],
}
SMOKE: dict[str, list[str]] = {
    "mnist_cnn": ["experiment=mnist_cnn", "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                  "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.on_device=true"],
}  # fmt: skip

RUNNER = r"""
import atexit, sys, time
import torch
import pytorch_lightning as pl
import dlrun.tasks.train

def sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()

WANT_COMPILE = "compile.enabled=true" in sys.argv
MODE = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("compile.mode=")), "default")

class FitClock(pl.Callback):
    def on_fit_start(self, trainer, module):
        # compile.* not wired into dlrun's train task yet: compile exactly as it would, and say who did
        if WANT_COMPILE:
            from dlrun.tasks.compile import compile_network, is_compiled
            if is_compiled(module):
                print("COMPILED_BY dlrun", flush=True)
            else:
                compile_network(module, MODE)
                print("COMPILED_BY bench", flush=True)

    def on_train_start(self, trainer, module):
        sync()
        self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        sync()
        print(f"FIT_S {time.perf_counter() - self.start:.2f}", flush=True)

build_trainer = dlrun.tasks.train.build_trainer

def with_clock(cfg, job, run, callbacks):
    return build_trainer(cfg, job, run, [FitClock(), *callbacks])

dlrun.tasks.train.build_trainer = with_clock

def report():
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_initialized() else float("nan")
    print(f"PEAK_GPU_GIB {peak:.2f}", flush=True)

atexit.register(report)
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
main()
"""


def run(name: str, overrides: list[str], workdir: Path, timeout: float) -> dict[str, Any]:
    """One preset run in a fresh process; its fit seconds, wall seconds, peak GPU GiB and test metrics."""
    folder = workdir / re.sub(r"\W+", "_", name)
    argv = [sys.executable, "-c", RUNNER, *overrides, "tracking=none", "callbacks.plots=false",
            "callbacks.progress_every_n_steps=0", f"hydra.run.dir={folder}"]  # fmt: skip
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=workdir, check=False)
    except subprocess.TimeoutExpired:
        return {"name": name, "command": "dlrun " + " ".join(overrides), "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - started
    out = proc.stdout
    result: dict[str, Any] = {
        "name": name,
        "command": "dlrun " + " ".join(overrides) + " tracking=none",
        "wall_s": round(wall, 1),
    }
    if proc.returncode != 0:
        result["error"] = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return result
    fit = re.findall(r"^FIT_S ([0-9.]+)", out, re.MULTILINE)
    peak = re.findall(r"^PEAK_GPU_GIB ([0-9.na]+)", out, re.MULTILINE)
    tests = re.findall(r"^test\s+(.*)$", out, re.MULTILINE)
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    result["fit_s"] = float(fit[-1]) if fit else None
    result["peak_gib"] = float(peak[-1]) if peak and peak[-1] != "nan" else None
    result["test"] = {k: float(v) for k, v in zip(*[iter(tests[-1].split())] * 2, strict=False)} if tests else {}
    result["last_epoch"] = epochs[-1] if epochs else None
    compiled = re.findall(r"^COMPILED_BY (\w+)", out, re.MULTILINE)
    result["compiled_by"] = compiled[-1] if compiled else "none"
    return result


def main() -> None:
    """Run the presets one after another and save what each measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    parser.add_argument("--timeout", type=float, default=400, help="seconds per run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--smoke", action="store_true", help="one tiny CPU run: checks the plumbing")
    args = parser.parse_args()
    os.environ.setdefault("DLRUN_DATA_DIR", str(data_dir()))
    runs = SMOKE if args.smoke else RUNS
    chosen = args.only.split(",") if args.only else list(runs)
    results: dict[str, Any] = {"machine": machine(), "runs": []}
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"dlrun-gpu-presets-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        result = run(name, runs[name], workdir, args.timeout)
        print(f"{name}: {result}", flush=True)
        results["runs"].append(result)
    emit(results, args.json)
    if any("error" in r for r in results["runs"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
