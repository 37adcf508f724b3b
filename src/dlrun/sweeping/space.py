"""The search space, written as Hydra sweep overrides (the syntax of hydra-optuna-sweeper), as Optuna distributions.

- ``choice(a, b, c)``                     -> categorical
- ``range(start, stop, step)``            -> int (or float with a float bound/step) with that step; ``stop`` excluded
- ``interval(low, high)``                 -> uniform float (int when both bounds are ints)
- ``tag(log, interval(low, high))``       -> log-uniform
- ``key=value`` (no sweep)                -> a fixed value every trial gets
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlrun.config.cross_validation import FOLD_KEY
from dlrun.errors import ConfigError


@dataclass
class SearchSpace:
    """Distributions by override key, and the fixed overrides every trial gets (whole override lines, by key)."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    def grid(self) -> dict[str, list[Any]]:
        """Every point of each (discrete) distribution, for Optuna's GridSampler."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        points: dict[str, list[Any]] = {}
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                points[name] = list(dist.choices)
            elif isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None and not dist.log:
                count = int(round((dist.high - dist.low) / dist.step)) + 1
                points[name] = [dist.low + i * dist.step for i in range(count)]
            else:
                raise ConfigError(
                    f"hydra.sweeper.params.{name}: the grid sampler needs choice(...) or range(...), not an interval"
                )
        return points


def _distribution(override: Any) -> Any:
    """The Optuna distribution of one sweep override (``choice``, ``range``, ``interval``, ``tag(log, ...)``)."""
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key = override.get_key_element()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        for choice in choices:
            if not isinstance(choice, (str, int, float, bool, type(None))):
                raise ConfigError(f"{key}: a choice must be a str, int, float, bool or null; got {choice!r}")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        step = value.step if value.step is not None else 1
        if any(isinstance(x, float) for x in (value.start, value.stop, step)):
            # Hydra's range excludes stop; Optuna's high is included: the last point below stop.
            count = int((value.stop - value.start) / step - 1e-9)
            return FloatDistribution(value.start, value.start + count * step, step=step)
        return IntDistribution(int(value.start), int(value.stop) - 1, step=int(step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log = "log" in value.tags
        if log and value.start <= 0:
            raise ConfigError(f"{key}: a log interval must start above 0, got {override.input_line!r}")
        if value.start > value.end:
            raise ConfigError(f"{key}: the interval's low end is above its high end in {override.input_line!r}")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{key}: {override.input_line!r} is no search space the Optuna sweeper knows")


def search_space(params: Mapping[str, Any] | None, arguments: Iterable[str]) -> SearchSpace:
    """``hydra.sweeper.params`` plus the command's overrides, as distributions and fixed overrides.

    A command-line sweep (``optimizer.lr=interval(1e-4,1e-2)``) adds to or replaces a preset's entry; a plain
    value on the command line (``trainer.max_epochs=3``) is passed to every trial.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    space = SearchSpace()
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        if key.lstrip("+~") == FOLD_KEY:
            continue  # cross-validation folds are not searched: every trial runs them all (sweeping.fold_trials)
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        if override.is_sweep_override():
            space.distributions[key] = _distribution(override)
        else:
            space.fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return space


def trial_overrides(params: Mapping[str, Any], fixed: Mapping[str, str]) -> list[str]:
    """The overrides of one trial job: its sampled params, then the fixed ones."""
    return [f"{key}={value}" for key, value in params.items()] + list(fixed.values())
