"""Rerun presets and print each recorded result beside the fresh one, with the tolerance the seeds' spread allows.

    python bench/reproduce.py mnist_mlp --short              # the short form, at its first recorded seed
    python bench/reproduce.py mnist_mlp mnist_cnn --all-seeds  # the full presets, every recorded seed
    python bench/reproduce.py mnist_mlp --short --seeds 1,2,3 --record   # measure and write the record

The recorded numbers live in ``experiments/results.yaml`` (shown in experiments/README.md); its header
says what each field means. Each preset has a ``full`` form (the preset as committed) and may have a
``short`` form (a documented quicker version: fewer epochs or batches) for checks on a CPU. A run is
``dlrun experiment=PRESET <form overrides> seed=S tracking=none`` in a fresh process, and the test metric
it prints is compared with the recorded value for the same seed (or with the recorded mean, for a seed
not recorded). Tolerance: ``max(2 x std over the recorded seeds, 2 x resolution)`` when at least 3 seeds
are recorded, else the form's ``fallback_tolerance``. Exit status 1 when any result is outside it.
``--record`` writes the fresh values and their provenance (dlrun commit, torch, machine, threads, wall
time) into the file instead of judging them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from common import ROOT, data_dir, dlrun_bin, machine

RESULTS = ROOT / "experiments" / "results.yaml"
METRIC_LINE = re.compile(r"^test\s+(.*)$", re.MULTILINE)


def load(path: Path = RESULTS) -> dict[str, Any]:
    """The recorded results."""
    return yaml.safe_load(path.read_text())


def tolerance(form: dict[str, Any]) -> tuple[float, str]:
    """How far a fresh value may land from the recorded one, and why."""
    values = list((form.get("values") or {}).values())
    if len(values) >= 3:
        spread = statistics.stdev(values)
        tol = max(2 * spread, 2 * form["resolution"])
        return tol, f"2 x std {spread:.4g} over {len(values)} seeds"
    return form["fallback_tolerance"], f"fallback ({len(values)} seed{'s' if len(values) != 1 else ''} recorded)"


def expected(form: dict[str, Any], seed: int) -> tuple[float | None, str]:
    """The recorded value to compare a run of ``seed`` with: that seed's, else the mean over seeds."""
    values = {int(k): float(v) for k, v in (form.get("values") or {}).items()}
    if seed in values:
        return values[seed], f"seed {seed}"
    if values:
        return statistics.mean(values.values()), f"mean of {len(values)} seeds"
    return None, "nothing recorded"


def run_preset(preset: str, form: dict[str, Any], seed: int, workdir: Path) -> tuple[float, float]:
    """Train the preset's form at ``seed`` in a fresh ``dlrun`` process; its test metric and wall seconds."""
    argv = [
        dlrun_bin(), f"experiment={preset}", *form.get("overrides", []), f"seed={seed}", "tracking=none",
        "callbacks.plots=false", "callbacks.progress_every_n_steps=0", f"hydra.run.dir={workdir / f'{preset}-{seed}'}",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"reproduce: {' '.join(argv[1:])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    found = METRIC_LINE.findall(proc.stdout)
    metrics = dict(zip(*[iter(found[-1].split())] * 2, strict=False)) if found else {}
    if form["metric"] not in metrics:
        sys.exit(f"reproduce: {preset}: no {form['metric']} in the output:\n{proc.stdout[-2000:]}")
    return float(metrics[form["metric"]]), wall


def dlrun_commit() -> str:
    """HEAD of this checkout (short), ``-dirty`` when tracked files changed."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "-uno"], capture_output=True, text=True, check=False
    )
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def record(
    preset: str, form_name: str, values: dict[int, float], provenance: dict[str, Any], path: Path = RESULTS
) -> None:
    """Write ``values`` and ``provenance`` into the preset's form in ``path``; every other line (and comment) stays."""
    lines = path.read_text().splitlines(keepends=True)
    inside_preset = inside_form = False
    for i, line in enumerate(lines):
        if not line.startswith(" ") and line.strip() and not line.startswith("#"):
            inside_preset = line.rstrip() == f"{preset}:"
            inside_form = False
        elif inside_preset and line.startswith("  ") and not line.startswith("    ") and line.strip():
            inside_form = line.rstrip() == f"  {form_name}:"
        elif inside_preset and inside_form and line.startswith("    values:"):
            lines[i] = f"    values: {flow(values)}\n"
        elif inside_preset and inside_form and line.startswith("    provenance:"):
            lines[i] = f"    provenance: {flow(provenance)}\n"
    path.write_text("".join(lines))
    check = load(path)[preset][form_name]
    if {int(k): float(v) for k, v in check["values"].items()} != values:
        sys.exit(f"reproduce: could not record {preset}.{form_name} in {path} (no values: line found)")


def flow(mapping: dict[Any, Any]) -> str:
    """A one-line YAML mapping."""
    return yaml.safe_dump(mapping, default_flow_style=True, sort_keys=False, width=10_000).strip()


def main() -> None:
    """Run the chosen presets' forms and print recorded vs fresh, or record them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+", help="preset names (experiments/*.yaml with an entry in results.yaml)")
    parser.add_argument("--short", action="store_true", help="the short form (else the full preset)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the first recorded, else 42)")
    parser.add_argument("--all-seeds", action="store_true", help="every recorded seed")
    parser.add_argument("--record", action="store_true", help="write the fresh values into experiments/results.yaml")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of each run (default: $OMP_NUM_THREADS, else 1)"
    )
    args = parser.parse_args()
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "1"))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ.setdefault("DLRUN_DATA_DIR", str(data_dir()))
    results = load()
    form_name = "short" if args.short else "full"
    failed = False
    for preset in args.presets:
        if preset not in results or form_name not in results[preset]:
            sys.exit(f"reproduce: {RESULTS.name} has no {form_name} form of {preset!r}")
        form = results[preset][form_name]
        recorded = {int(k): float(v) for k, v in (form.get("values") or {}).items()}
        if args.seeds:
            seeds = [int(s) for s in args.seeds.split(",")]
        else:
            seeds = sorted(recorded) if args.all_seeds else [next(iter(recorded), 42)]
        tol, why = tolerance(form)
        fresh: dict[int, float] = {}
        walls: list[float] = []
        with tempfile.TemporaryDirectory(prefix="dlrun-reproduce-") as tmp:
            for seed in seeds:
                value, wall = run_preset(preset, form, seed, Path(tmp))
                fresh[seed], walls = value, walls + [wall]
                want, against = expected(form, seed)
                command = " ".join([f"dlrun experiment={preset}", *form.get("overrides", []), f"seed={seed}"])
                if want is None or args.record:
                    print(
                        f"{preset} [{form_name}] seed {seed}: {form['metric']} {value:.4f} ({wall:.0f} s)  `{command}`",
                        flush=True,
                    )
                    continue
                ok = abs(value - want) <= tol + 1e-12
                failed |= not ok
                verdict = "ok" if ok else "OUTSIDE"
                print(
                    f"{preset} [{form_name}] seed {seed}: recorded {want:.4f} ({against}), fresh {value:.4f}, "
                    f"diff {value - want:+.4f}, tolerance {tol:.4f} ({why}): {verdict}  ({wall:.0f} s)  `{command}`",
                    flush=True,
                )
        if len(fresh) > 1:
            spread = statistics.stdev(fresh.values())
            mean = statistics.mean(fresh.values())
            print(f"{preset} [{form_name}] fresh mean {mean:.4f} ± {spread:.4f} over {len(fresh)} seeds")
        if args.record:
            info = machine()
            provenance = {
                "commit": dlrun_commit(), "torch": str(info["torch"]),
                "machine": f"{info['cpu']} ({info['cores']} cores)",
                "threads": threads, "wall_s": round(statistics.median(walls)), "load_1min": info["load_1min"],
                "date": dt.date.today().isoformat(),
            }  # fmt: skip
            record(preset, form_name, fresh, provenance)
            print(f"recorded in {RESULTS.relative_to(ROOT)}: {preset}.{form_name} values {fresh}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
