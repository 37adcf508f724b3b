"""Run every benchmark and write the results table into ``docs/benchmarks.md``.

    python bench/run_all.py                        # full sizes, one script after another (~30 min on 2 cores)
    python bench/run_all.py --smoke --jobs 3 --out /tmp/b.md     # tiny sizes: checks that nothing rotted

The table goes between the ``bench:start``/``bench:end`` markers of the output file (created if missing),
so the notes written around it stay. Raw results of each script land in ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, machine, median

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
SMOKE_CLI = ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "callbacks.plots=false"]
SMOKE_CLI += ["tracking.log_model=false"]
# script -> (full-size arguments, smoke arguments)
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "train_overhead": ([], ["--models", "mlp", "--batches", "5", "--repeats", "1"]),
    "step_phases": ([], ["--batches", "5", "--repeats", "1"]),
    "cli_epoch": ([], ["--batches", "5", "--repeats", "1", *SMOKE_CLI]),
    "input_pipeline": ([], ["--batches", "5", "--repeats", "1"]),
    "text_batching": ([], ["--batches", "1", "--repeats", "1", "model.emb_size=16", "model.hidden_size=16"]),
    "startup": ([], ["--repeats", "1", "--help-repeats", "1", "--import-repeats", "0"]),
}


def run_script(name: str, args: list[str], results: Path, threads: int) -> tuple[str, dict[str, Any]]:
    """Run ``bench/<name>.py`` with ``args``; return its command line (from the repository root) and results."""
    out = results / f"{name}.json"
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out  # the command as a reader reruns it
    argv = [f"bench/{name}.py", *args, "--threads", str(threads), "--json", str(shown)]
    print(f"== python {' '.join(argv)}", flush=True)
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: {name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return "python " + " ".join(argv), json.loads(out.read_text())


def row(*cells: Any) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def check(ok: bool) -> str:
    """Table cell for a target."""
    return "met" if ok else "**not met**"


def per_repeat(values: list[float], digits: int = 0) -> str:
    """Per-repeat values, in the order measured."""
    return ", ".join(f"{v:.{digits}f}" for v in values)


def ratio_row(what: str, r: dict[str, Any], ours: str = "dlrun", ref: str = "hand", target: bool = True) -> str:
    """Row of a samples/s comparison: the median of per-repeat ratios, and each of them."""
    ratios = [a / b for a, b in zip(r["runs"][ours], r["runs"][ref], strict=True)]
    result = f"ratio **{median(ratios):.3f}** (per repeat {per_repeat(ratios, 3)})"
    cells = f"{r[f'{ours}_samples_per_s']:.0f}", f"{r[f'{ref}_samples_per_s']:.0f}"
    if not target:
        return row(what, *cells, result, "", "")
    return row(what, *cells, result, "≥ 0.95", check(median(ratios) >= 0.95))


def table(res: dict[str, dict[str, Any]]) -> list[str]:
    """The targets table, for the results that are present."""
    lines = [row("what", "dlrun", "reference", "result", "target", ""), row(*["---"] * 6)]
    for model, r in res.get("train_overhead", {}).get("models", {}).items():
        name = model.upper()
        lines.append(ratio_row(f"{name} epoch, `dlrun.run` vs hand loop in-process (samples/s)", r))
        if "lightning" in r["runs"]:
            what = f"{name} epoch, bare Lightning `Trainer` vs hand loop: Lightning's own cost"
            lines.append(ratio_row(what, r, "lightning", "hand", target=False))
            what = f"{name} epoch, `dlrun.run` vs bare Lightning `Trainer`: what dlrun adds"
            lines.append(ratio_row(what, r, "dlrun", "lightning", target=False))
    if "cli_epoch" in res:
        r = res["cli_epoch"]
        lines.append(ratio_row(f"MLP epoch, `{r['command']}` logged samples/s vs `bench/reference_loop.py`", r))
        bars = {"dlrun_terminal": "every 10 steps (default)", "dlrun_terminal_every_step": "after every step (stock)"}
        for side, how in bars.items():
            if side in r["runs"]:
                what = f"same, in a terminal: progress bar redrawn {how}"
                lines.append(ratio_row(what, r, side, "hand", target=side == "dlrun_terminal"))
        gib = r["dlrun_peak_rss_mib"] / 1024
        each = f"per repeat {per_repeat([v / 1024 for v in r['runs']['dlrun_peak_rss_mib']], 2)} GiB"
        lines.append(row("peak RSS of that run", f"{gib:.2f} GiB", "", each, "< 1.5 GiB", check(gib < 1.5)))
    if "input_pipeline" in res:
        r = res["input_pipeline"]
        modes = {"": ("dlrun", "uint8, normalized per batch (GPU mode)")}
        if "dlrun_cpu_training" in r["batches_per_s"]:
            modes["cpu_training_"] = ("dlrun_cpu_training", "normalized once (CPU training)")
        for prefix, (side, mode) in modes.items():
            dl = f"{r['batches_per_s'][side]:.0f}"
            for workers in (0, 2):
                x = r[f"{prefix}speedup_vs_per_sample_{workers}_workers"]
                ref = f"{r['batches_per_s'][f'per_sample_{workers}_workers']:.0f}"
                what = f"MNIST batches/s, data module [{mode}] vs per-sample Dataset + DataLoader({workers} workers)"
                lines.append(row(what, dl, ref, f"**{x:.1f}×**", "≥ 20×", check(x >= 20)))
    if "text_batching" in res:
        r = res["text_batching"]
        bucket, padded = r["modes"]["bucket"], r["modes"]["padded"]
        pad = bucket["pad_fraction_epoch"]
        lines.append(row("`bucket` pad fraction, one epoch", f"{pad:.3f}", "", "", "≤ 0.05", check(pad <= 0.05)))
        x = r["bucket_vs_padded_tokens_per_s"]
        what = f"real target tokens/s, `bucket` vs `padded` ({r['steps']} steps)"
        dl, ref = f"{bucket['tokens_per_s']:.0f}", f"{padded['tokens_per_s']:.0f}"
        lines.append(row(what, dl, ref, f"**{x:.2f}×**", "≥ 1.5×", check(x >= 1.5)))
    if "startup" in res:
        r = res["startup"]
        each = f"per run {per_repeat(r['runs']['help_s'], 2)}"
        took = r["help_s"]
        lines.append(row("`dlrun --help` wall time", f"{took:.2f} s", "", each, "< 1.0 s", check(took < 1.0)))
        floors = ""
        if "import_lightning_s" in r:
            floors = f"`import pytorch_lightning` {r['import_lightning_s']:.1f} s, "
            floors += f"`import mlflow.tracking` {r['import_mlflow_s']:.1f} s"
        each = f"per run {per_repeat(r['runs']['fast_dev_run_s'], 1)}"
        took = r["fast_dev_run_s"]
        what = "`dlrun trainer.fast_dev_run=true` wall time"
        lines.append(row(what, f"{took:.1f} s", floors, each, "< 12 s", check(took < 12)))
    return lines


def text_table(r: dict[str, Any]) -> list[str]:
    """Per-mode rows of the text batching benchmark."""
    steps = f"{r['steps']} training steps per mode ({r['accelerator']})"
    lines = [
        f"Text batching on Multi30k train, GRU+attention, {steps}, medians:",
        "",
        row("`data.batching`", "pad fraction, one epoch", "pad fraction, trained steps", "real tokens/s", "peak MiB"),
        row(*["---"] * 5),
    ]
    for mode, m in r["modes"].items():
        pads = f"{m['pad_fraction_epoch']:.3f}", f"{m['pad_fraction_steps']:.3f}"
        lines.append(row(f"`{mode}`", *pads, f"{m['tokens_per_s']:.0f}", f"{m['peak_mib']:.0f}"))
    return lines


def phases_table(r: dict[str, Any]) -> list[str]:
    """Per-phase milliseconds of an MLP training step, for dlrun, bare Lightning and the hand loop."""
    sides = r["phases_ms"]
    names = {"dlrun": "dlrun", "lightning": "bare Lightning", "hand": "hand loop"}
    lines = [
        "Where an MLP step's time goes (`bench/step_phases.py`; ms, medians over the steps of an epoch, then"
        " over repeats; the hand loop indexes its batch inside *to forward*):",
        "",
        row("phase", *(names[s] for s in sides)),
        row(*["---"] * (len(sides) + 1)),
    ]
    for phase in sides["hand"]:
        cells = [f"{sides[s][phase]:.3f}" for s in sides]
        lines.append(row(f"**{phase}**" if phase == "step" else phase, *cells))
    return lines


def report(
    res: dict[str, dict[str, Any]], commands: list[str], start: dict[str, Any], threads: int, smoke: bool
) -> str:
    """The generated part of docs/benchmarks.md: machine, date, targets table, text table, commands."""
    git = ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip() or "?"
    loads = "; ".join(f"{n} {r['machine']['load_1min']}→{r['machine']['load_1min_end']}" for n, r in res.items())
    lines = [
        START,
        f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {start['cpu']} "
        f"({start['cores']} cores, {start['memory_gib']} GiB), {start['platform']}; "
        f"Python {start['python']}, torch {start['torch']}, "
        f"{threads} torch thread(s) on every side; commit {commit} plus the working tree.",
        f"1-minute load average at the start→end of each script: {loads}.",
        "",
    ]
    if smoke:
        lines += ["**Smoke sizes: these numbers say nothing about speed.**", ""]
    lines += [*table(res), ""]
    if "step_phases" in res:
        lines += [*phases_table(res["step_phases"]), ""]
    if "text_batching" in res:
        lines += [*text_table(res["text_batching"]), ""]
    lines += ["Commands, from the repository root:", "", "```", *commands, "```", END]
    return "\n".join(lines)


def write(path: Path, block: str) -> None:
    """Put ``block`` between the markers of ``path`` (or create the file with a title)."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    """Run the scripts (all, or ``--only``), then write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the scripts run; numbers meaningless")
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset of " + ", ".join(SCRIPTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every side (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="scripts at once (only with --smoke: it skews timings)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.jobs > 1 and not args.smoke:
        parser.error("--jobs > 1 runs scripts side by side, which skews their timings; use it with --smoke only")
    args.results.mkdir(parents=True, exist_ok=True)
    start = machine()
    names = args.only.split(",")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        size = 1 if args.smoke else 0
        futures = [pool.submit(run_script, n, SCRIPTS[n][size], args.results.resolve(), args.threads) for n in names]
        done = dict(zip(names, (f.result() for f in futures), strict=True))
    results = {name: result for name, (_, result) in done.items()}
    write(args.out, report(results, [cmd for cmd, _ in done.values()], start, args.threads, args.smoke))
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
