"""Errors raised while reading datasets."""

from dlrun.errors import UserError


class DataError(UserError):
    """Bad or missing input data; the message names the file and the fault."""
