"""``dlrun rerun --check``: the new run's val/* and test/* metrics side by side with the recorded ones, and the verdict.

Bit-exact is expected when both runs trained on a CPU with the same threads, seed and torch; otherwise the
metrics may move by a stated tolerance (``--tolerance``, default ``LOOSE_TOLERANCE``), and the line says why.
"""

from __future__ import annotations

from typing import Any

from dlrun.errors import UserError
from dlrun.sweeping.threads import THREADS_PARAM

# Not bit-exact (a GPU, other threads, another seed or torch): how far a metric may move, unless --tolerance.
LOOSE_TOLERANCE = 0.01
CHECKED_PREFIXES = ("val/", "test/")


class MetricsDisagree(UserError):
    """``--check``: the rerun's metrics are not the recorded ones (within the stated tolerance)."""


def check_metrics(
    source: Any, source_env: dict[str, Any], new: Any, new_env: dict[str, Any], tolerance: float | None
) -> int:
    """Print recorded and new val/* and test/* metrics of two runs (``RunRecord``) side by side, with their
    ``environment.json``; MetricsDisagree when any is off."""
    exact, why = expect_exact(source, source_env, new, new_env)
    limit = tolerance if tolerance is not None else (0.0 if exact else LOOSE_TOLERANCE)
    how = "exactly" if limit == 0 else f"within {limit:g}"
    print(f"check: the metrics must agree {how} ({why})")
    recorded = source.metrics
    names = sorted(k for k in recorded if k.startswith(CHECKED_PREFIXES))
    if not names:
        raise MetricsDisagree(f"run {source.run_id}: recorded no val/* or test/* metrics to check against")
    width = max(len(n) for n in names)
    print(f"  {'metric':<{width}}  {'recorded':>12}  {'rerun':>12}  {'difference':>10}")
    off = []
    for name in names:
        then, now = recorded[name], new.metrics.get(name)
        gap = None if now is None else abs(now - then)
        agrees = gap is not None and gap <= limit
        if not agrees:
            off.append(name)
        shown, gap_shown = ("missing", "-") if now is None else (f"{now:.8g}", f"{gap:.3g}")
        print(f"  {name:<{width}}  {then:>12.8g}  {shown:>12}  {gap_shown:>10}  {'same' if agrees else 'DIFFERENT'}")
    if off:
        raise MetricsDisagree(
            f"rerun {new.run_id[:8]} of {source.run_id[:8]}: {len(off)} of {len(names)} metrics differ "
            f"from the record ({', '.join(off)}; must agree {how})"
        )
    print(f"check: all {len(names)} metrics agree {how}")
    return 0


def expect_exact(source: Any, old_env: dict[str, Any], new: Any, new_env: dict[str, Any]) -> tuple[bool, str]:
    """Whether the two runs should agree to the last bit (CPU, same threads, seed and torch), and why (not)."""
    a, b = source.params, new.params
    facts = [
        ("device", _device(a, old_env), _device(b, new_env)),
        ("threads", a.get(THREADS_PARAM), b.get(THREADS_PARAM)),
        ("seed", a.get("seed"), b.get("seed")),
        ("torch", _torch(old_env), _torch(new_env)),
    ]
    differ = [f"{name} {x} -> {y}" for name, x, y in facts if x != y or x is None]
    if not differ and facts[0][1] != "CPU":
        differ = [f"device {facts[0][1]} (not bit-exact by default)"]
    if differ:
        return False, "not bit-exact: " + ", ".join(differ)
    return True, f"CPU, threads {a[THREADS_PARAM]}, seed {a.get('seed')}, torch {_torch(old_env)} in both runs"


def _device(params: dict[str, str], env: dict[str, Any]) -> str:
    """CPU, or the accelerator a run may have used (``trainer.accelerator``, and the devices it saw)."""
    accelerator = params.get("trainer.accelerator", "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not (env.get("torch") or {}).get("devices"))
    return "CPU" if on_cpu else "GPU"


def _torch(env: dict[str, Any]) -> str | None:
    return (env.get("torch") or {}).get("version") or (env.get("distributions") or {}).get("torch")
