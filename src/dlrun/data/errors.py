"""Errors raised while reading datasets."""

from dlrun.errors import UserError


class DataError(UserError):
    """Bad or missing input data; the message names the file and the fault."""


def check_at_least(*rules: tuple[str, int, int]) -> None:
    """Raise ``ValueError("name: must be >= least, got value")`` for the first ``(name, value, least)`` too small."""
    for name, value, least in rules:
        if value < least:
            raise ValueError(f"{name}: must be >= {least}, got {value}")
