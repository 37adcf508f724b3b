"""Write the measured block of docs/gpu.md from the JSON files that bench/gpu/check.sh leaves in a folder.

    python bench/gpu/report.py bench/results/gpu            # rewrites the block between the gpu markers

Reads ``overhead_*.json`` (bench/gpu/overhead.py) and ``presets.json`` (bench/gpu/presets.py), whichever
exist, judges issue 15's targets, and replaces the text between ``<!-- gpu:start -->`` and
``<!-- gpu:end -->`` in docs/gpu.md; the hand-written text around the markers stays.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py
from common import ROOT  # noqa: E402

START, END = "<!-- gpu:start -->", "<!-- gpu:end -->"
DOC = ROOT / "docs" / "gpu.md"
# issue 15: dlrun / hand loop for the CNN per batch size; preset targets below
CNN_TARGETS = {128: 0.90, 1024: 0.95}
CNN_PRESET = {"fit_s": 30.0, "test/acc": 0.9932, "acc_tolerance": 0.0015}
SEQ2SEQ_PRESET = {"fit_s": 172.0 / 2, "test/bleu": 37.39, "bleu_tolerance": 0.5}


def verdict(ok: bool | None) -> str:
    """Table cell for a target."""
    return "" if ok is None else ("met" if ok else "**not met**")


def case_name(c: dict[str, Any]) -> str:
    """``cnn b128 32-true compiled``."""
    return f"{c['model']} b{c['batch_size']} {c['precision']}{' compiled' if c['compiled'] else ''}"


def overhead_block(results: list[dict[str, Any]]) -> list[str]:
    """Throughput table over every case of every overhead file, and the phase tables."""
    lines = [
        "| case | dlrun | bare Lightning | hand loop | dlrun / hand | target | | Lightning / hand | dlrun / Lightning "
        "| peak GiB dlrun / hand |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    phases: dict[str, Any] = {}
    for result in results:
        phases.update(result.get("phases_ms", {}))
        for c in result["cases"]:
            unit = c["unit"]
            target = CNN_TARGETS.get(c["batch_size"]) if c["model"] == "cnn" and not c["compiled"] else None
            peak = c["peak_gib"]
            mem = " / ".join("-" if peak.get(s) is None else f"{peak[s]:.2f}" for s in ("dlrun", "hand"))
            goal = "" if target is None else f"≥ {target}"
            met = verdict(None if target is None else c["ratio"] >= target)
            lines.append(
                f"| {case_name(c)} ({unit}/s) | {c[f'dlrun_{unit}_per_s']:,.0f} "
                f"| {c[f'lightning_{unit}_per_s']:,.0f} | {c[f'hand_{unit}_per_s']:,.0f} | **{c['ratio']:.3f}** "
                f"| {goal} | {met} | {c['lightning_vs_hand']:.3f} | {c['dlrun_vs_lightning']:.3f} | {mem} |"
            )
    for name, per_side in phases.items():
        lines += [
            "",
            f"Host time per step phase, {name} (ms, medians; unsynchronized: the time the host takes to queue each "
            "phase):",
            "",
        ]
        lines += ["| phase | dlrun | bare Lightning | hand loop |", "| --- | ---: | ---: | ---: |"]
        for phase in per_side["hand"]:
            cells = " | ".join(f"{per_side[s][phase]:.3f}" for s in ("dlrun", "lightning", "hand"))
            lines.append(f"| {'**step**' if phase == 'step' else phase} | {cells} |")
    return lines


def presets_block(result: dict[str, Any]) -> list[str]:
    """One row per preset run, with the issue's targets judged."""
    lines = [
        "| run | command | training (fit) | wall | peak GiB | test | target | |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for run in result["runs"]:
        if "error" in run:
            lines.append(f"| {run['name']} | `{run['command']}` | | | | {run['error']} | | **failed** |")
            continue
        test = run.get("test", {})
        shown = ", ".join(
            f"{k} {v:.4f}" for k, v in sorted(test.items()) if k in ("test/acc", "test/bleu", "test/bleu_greedy")
        )
        target, ok = "", None
        fit = run.get("fit_s")
        if run["name"].startswith("mnist_cnn") and "test/acc" in test and fit is not None:
            acc_ok = test["test/acc"] >= CNN_PRESET["test/acc"] - CNN_PRESET["acc_tolerance"]
            target, ok = (
                f"< {CNN_PRESET['fit_s']:.0f} s, test/acc ≥ {CNN_PRESET['test/acc']} - {CNN_PRESET['acc_tolerance']}",
                fit < CNN_PRESET["fit_s"] and acc_ok,
            )
        if run["name"].startswith("multi30k") and "test/bleu" in test and fit is not None:
            bleu_ok = abs(test["test/bleu"] - SEQ2SEQ_PRESET["test/bleu"]) <= SEQ2SEQ_PRESET["bleu_tolerance"]
            target, ok = (
                f"< {SEQ2SEQ_PRESET['fit_s']:.0f} s, BLEU {SEQ2SEQ_PRESET['test/bleu']} ± 0.5",
                fit < SEQ2SEQ_PRESET["fit_s"] and bleu_ok,
            )
        peak = "-" if run.get("peak_gib") is None else f"{run['peak_gib']:.2f}"
        fit_cell = f"{fit if fit is not None else '?'} s"
        lines.append(
            f"| {run['name']} | `{run['command']}` | {fit_cell} | {run['wall_s']} s | {peak} | {shown} | {target} "
            f"| {verdict(ok)} |"
        )
    return lines


def block(folder: Path) -> str:
    """The generated Markdown between the markers."""
    overheads = [json.loads(p.read_text()) for p in sorted(folder.glob("overhead_*.json"))]
    presets = folder / "presets.json"
    sources = overheads + ([json.loads(presets.read_text())] if presets.exists() else [])
    if not sources:
        sys.exit(f"gpu/report.py: no results in {folder}")
    sample = sources[0]
    device = sample.get("device", {})
    m = sample["machine"]
    card = f"{device.get('name', 'the GPU')} ({device.get('memory_gib', '?')} GiB, CUDA {device.get('cuda', '?')})"
    head = f"Measured on {card}, torch {m['torch']}, Python {m['python']}, {m['cores']} CPU cores ({m['cpu']})."
    lines = [START, head, ""]
    if overheads:
        settings = overheads[0]["settings"]
        lines += [
            (
                "dlrun vs a hand-written loop vs a bare Lightning `Trainer`, one process, sides alternating, "
                f"medians of {settings['repeats']} repeats; {settings['steps']} timed steps after {settings['skip']} "
                f"untimed ones (warm-up, compilation; `torch.compile` mode `{settings['compile_mode']}`). "
                "`python bench/gpu/overhead.py` (see `bench/gpu/check.sh` for the exact calls):"
            ),
            "",
            *overhead_block(overheads),
            "",
        ]
    if presets.exists():
        lines += [
            "Presets on the card (`python bench/gpu/presets.py`; training = `fit` from its first step to its end, "
            "validation included):",
            "",
        ]
        lines += presets_block(json.loads(presets.read_text()))
    lines.append(END)
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    """Replace the block between the markers of ``path`` (append it when there are none)."""
    old = path.read_text() if path.exists() else ""
    if START in old and END in old:
        before, rest = old.split(START, 1)
        new = before + text + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    """Write docs/gpu.md's measured block from a results folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder holding overhead_*.json and presets.json")
    parser.add_argument("--out", type=Path, default=DOC, help="Markdown file to update (default docs/gpu.md)")
    args = parser.parse_args()
    write(args.out, block(args.folder))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
