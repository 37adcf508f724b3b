"""Failures that dlrun reports as one line and an exit code instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A fault in the user's input: config, data, checkpoint or environment."""

    exit_code = 1


class ConfigError(UserError):
    """A config value has the wrong type, range or name; the message starts with its key."""

    exit_code = 2


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss stopped being finite)."""


class RunInterrupted(BaseException):
    """Ctrl-C or SIGTERM arrived; a BaseException so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class TrialPruned(Exception):
    """A search's pruner stopped this trial early; the run is marked KILLED with tag ``dlrun.pruned``."""

    def __init__(self, epoch: int, value: float | None = None) -> None:
        super().__init__(f"pruned after epoch {epoch}" + (f" ({value:.6g})" if value is not None else ""))
        self.epoch = epoch
        self.value = value
