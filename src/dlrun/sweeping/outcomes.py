"""What a sweep job hands back to Hydra when it does not return a number: failed, or pruned by its search."""

from __future__ import annotations

from dataclasses import dataclass

from dlrun.errors import UserError


@dataclass(frozen=True)
class JobFailed:
    """What a failed job returns to Hydra: not a number, so Optuna records the trial as failed and goes on."""

    error: str

    @classmethod
    def of(cls, err: BaseException) -> JobFailed:
        """The error as one line: the message of dlrun's own errors, ``Type: message`` of others."""
        message = " ".join(str(err).split()) or type(err).__name__
        return cls(message if isinstance(err, UserError) else f"{type(err).__name__}: {message}")


@dataclass(frozen=True)
class JobPruned:
    """What a job stopped by its search's pruner returns to Hydra: the epochs it trained and its last value."""

    epoch: int
    value: float | None = None
