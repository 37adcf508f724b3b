"""The benchmark scripts at tiny sizes (``bench/run_all.py --smoke``), so they keep running; numbers are not checked.

The smoke run itself (about 70 s of two cores) is marked slow: benchmarks are run apart from the default suite,
which keeps the checks that cost nothing (the report writer, the GPU scripts' imports).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, dlrun_env

BENCH = REPO / "bench"
SCRIPTS = ("train_overhead", "step_phases", "cli_epoch", "input_pipeline", "text_batching", "startup")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run every script at smoke size, three at a time; return the report and the results folder."""
    tmp = tmp_path_factory.mktemp("bench")
    report, results = tmp / "benchmarks.md", tmp / "results"
    argv = [sys.executable, str(BENCH / "run_all.py"), "--smoke", "--jobs", "3", "--out", str(report)]
    argv += ["--results", str(results)]
    proc = subprocess.run(argv, env=dlrun_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return report, results


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_script_wrote_results(smoke: tuple[Path, Path], name: str) -> None:
    result = json.loads((smoke[1] / f"{name}.json").read_text())
    assert result["machine"]["cores"] >= 1
    assert result["machine"]["torch_threads"] == 1


@pytest.mark.slow
def test_report_has_every_row_between_markers(smoke: tuple[Path, Path]) -> None:
    text = smoke[0].read_text()
    block = text.split("<!-- bench:start -->", 1)[1].split("<!-- bench:end -->", 1)[0]
    for row in ("MLP epoch, `dlrun.run` vs hand loop", "bare Lightning `Trainer` vs hand loop",
                "`dlrun.run` vs bare Lightning", "logged samples/s", "peak RSS", "MNIST batches/s",
                "normalized once (CPU training)", "Where an MLP step's time goes", "optimizer step",
                "`bucket` pad fraction", "`bucket` vs `padded`", "`dlrun --help`", "fast_dev_run",
                "python bench/startup.py"):  # fmt: skip
        assert row in block, row
    assert "Smoke sizes" in block


def test_report_keeps_the_text_around_the_markers(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from run_all import END, START, write
    finally:
        sys.path.remove(str(BENCH))
    path = tmp_path / "b.md"
    path.write_text(f"# Title\n\nnotes before\n\n{START}\nold table\n{END}\n\nnotes after\n")
    write(path, f"{START}\nnew table\n{END}")
    assert path.read_text() == f"# Title\n\nnotes before\n\n{START}\nnew table\n{END}\n\nnotes after\n"


@pytest.mark.parametrize("name", ["overhead", "presets", "report"])
def test_gpu_script_finds_the_shared_modules(name: str) -> None:
    """``python bench/gpu/NAME.py --help`` run from bench/gpu/: the GPU scripts find bench/common.py and the rest."""
    argv = [sys.executable, str(BENCH / "gpu" / f"{name}.py"), "--help"]
    proc = subprocess.run(argv, cwd=BENCH / "gpu", env=dlrun_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "usage:" in proc.stdout


@pytest.mark.slow
def test_gpu_overhead_runs_on_the_cpu_at_smoke_size(tmp_path: Path) -> None:
    """``bench/gpu/overhead.py --smoke``: every side of every case (MNIST, seq2seq; compiled or not), phase table."""
    out = tmp_path / "overhead.json"
    argv = [sys.executable, str(BENCH / "gpu" / "overhead.py"), "--smoke", "--json", str(out)]
    proc = subprocess.run(argv, env=dlrun_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {(c["task"], c["compiled"]) for c in result["cases"]} == {
        ("mnist", False), ("mnist", True), ("seq2seq", False), ("seq2seq", True)
    }  # fmt: skip
    for case in result["cases"]:
        assert all(case["runs"][side][0] > 0 for side in ("dlrun", "lightning", "hand")), case
        assert case["compiled_by"] in (("dlrun", "bench") if case["compiled"] else ("none",))
    (phases,) = result["phases_ms"].values()
    assert set(phases) == {"dlrun", "lightning", "hand"} and phases["hand"]["forward"] > 0
    assert "| case | dlrun | bare Lightning | hand loop |" in proc.stdout
