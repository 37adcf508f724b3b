"""``NullRun`` (tracking off, DDP ranks > 0) offers exactly ``TrackedRun``'s public methods, as no-ops."""

from __future__ import annotations

import inspect

import pytest

from dlrun.tracking.run import NullRun, TrackedRun


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_null_run_has_exactly_the_tracked_runs_methods() -> None:
    tracked, null = public_methods(TrackedRun), public_methods(NullRun)
    assert sorted(null) == sorted(tracked)
    for name, signature in tracked.items():
        assert list(null[name].parameters) == list(signature.parameters), name


def test_a_misspelled_call_fails_without_tracking() -> None:
    run = NullRun()
    assert run.log_metrics({"x": 1.0}) is None
    with pytest.raises(AttributeError):
        run.log_metric({"x": 1.0})  # type: ignore[attr-defined]
    run.terminate("FINISHED")
    assert run.status == "FINISHED" and run.run_id is None
