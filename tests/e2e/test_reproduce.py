"""bench/reproduce.py: tolerances from the recorded seeds, the record written in place, the short MLP form
reproduced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, dlrun_env

sys.path.insert(0, str(REPO / "bench"))
import reproduce


def test_every_recorded_form_names_its_metric_and_tolerance() -> None:
    results = reproduce.load()
    assert {"mnist_mlp", "mnist_cnn", "multi30k_gru_attn"} <= set(results)
    for preset, forms in results.items():
        assert (REPO / "experiments" / f"{preset}.yaml").is_file(), preset
        for name, form in forms.items():
            assert name in ("full", "short")
            assert form["metric"].startswith("test/") and form["resolution"] > 0 and form["fallback_tolerance"] > 0
            assert all(isinstance(o, str) and "=" in o for o in form["overrides"]), (preset, name)


def test_tolerance_follows_the_seeds_spread() -> None:
    three = {"values": {1: 0.970, 2: 0.972, 3: 0.974}, "resolution": 0.0001, "fallback_tolerance": 0.01}
    tol, why = reproduce.tolerance(three)
    assert tol == pytest.approx(2 * 0.002) and "3 seeds" in why
    same = {"values": {1: 0.97, 2: 0.97, 3: 0.97}, "resolution": 0.0001, "fallback_tolerance": 0.01}
    assert reproduce.tolerance(same)[0] == pytest.approx(0.0002)  # never below two steps of the metric
    one = {"values": {42: 0.99}, "resolution": 0.0001, "fallback_tolerance": 0.0015}
    assert reproduce.tolerance(one) == (0.0015, "fallback (1 seed recorded)")
    assert reproduce.expected(three, 2) == (0.972, "seed 2")
    assert reproduce.expected(three, 9)[0] == pytest.approx(0.972)


def test_record_rewrites_only_its_form(tmp_path: Path) -> None:
    path = tmp_path / "results.yaml"
    path.write_text(
        "# header comment\n"
        "a:\n  full:\n    metric: test/acc\n    values: {1: 0.5}\n    provenance: {}\n"
        "  short:\n    metric: test/acc\n    values: {}   # to fill\n    provenance: {}\n"
        "b:\n  short:\n    metric: test/acc\n    values: {}\n    provenance: {}\n"
    )
    reproduce.record("a", "short", {42: 0.97, 1: 0.96}, {"commit": "abc", "threads": 1}, path)
    data = yaml.safe_load(path.read_text())
    assert data["a"]["short"]["values"] == {42: 0.97, 1: 0.96}
    assert data["a"]["short"]["provenance"] == {"commit": "abc", "threads": 1}
    assert data["a"]["full"]["values"] == {1: 0.5} and data["b"]["short"]["values"] == {}
    assert path.read_text().startswith("# header comment\n")


@pytest.mark.slow
def test_short_mlp_form_reproduces_its_record() -> None:
    """The check issue 16 asks for: `python bench/reproduce.py mnist_mlp --short` within the stated tolerance."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "reproduce.py"), "mnist_mlp", "--short", "--threads", "1"],
        env=dlrun_env(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert ": ok" in proc.stdout
