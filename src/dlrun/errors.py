"""Failures that dlrun reports as one line and an exit code instead of a traceback."""

from __future__ import annotations

import re

# Terminal colour codes inside library messages (torch's weights_only advice) must not reach a plain error line.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def one_line(text: str) -> str:
    """``text`` without terminal colour codes, its whitespace (newlines too) collapsed to single spaces."""
    return " ".join(_ANSI.sub("", text).split())


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


# The last signal ``raise_interrupt`` turned into ``RunInterrupted``: Python drops an exception raised while it
# runs a finalizer (a ``__del__`` or weakref callback, e.g. SQLAlchemy's), so long loops also check this.
received: int | None = None


def raise_interrupt(signum: int, frame: object) -> None:
    """Signal handler of the CLI and ``dlrun.run``: Ctrl-C and SIGTERM become ``RunInterrupted``."""
    global received
    received = signum
    raise RunInterrupted(signum)


class TrialPruned(Exception):
    """A search's pruner stopped this trial early; the run is marked KILLED with tag ``dlrun.pruned``."""

    def __init__(self, epoch: int, value: float | None = None) -> None:
        super().__init__(f"pruned after epoch {epoch}" + (f" ({value:.6g})" if value is not None else ""))
        self.epoch = epoch
        self.value = value
