"""What every browse command shares: an argparse parser whose mistakes are one line, and one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from dlrun.errors import ConfigError, UserError, one_line


class UsageError(ConfigError):
    """A command line that argparse cannot read (unknown option, missing argument)."""


def _formatter(raw: bool) -> type[argparse.HelpFormatter]:
    """rich-argparse's colored help when installed; ``raw`` keeps the epilog's line breaks."""
    try:
        from rich_argparse import RawDescriptionRichHelpFormatter, RichHelpFormatter
    except ImportError:  # optional: plain argparse help is fine
        return argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter
    return RawDescriptionRichHelpFormatter if raw else RichHelpFormatter


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of printing usage and exiting (subparsers too)."""

    def __init__(self, *args: Any, raw_epilog: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _formatter(raw_epilog))
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Raise instead of exiting, so the caller prints one line."""
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def add_store_option(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """``--tracking-uri``, resolved as training resolves ``tracking.uri``."""
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        default=argparse.SUPPRESS if suppress else None,
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<this folder>/mlflow.db)",
    )


def guarded(command: Callable[[], int]) -> int:
    """Run ``command``; any failure becomes ``dlrun: error: ...`` on stderr and an exit code, no traceback."""
    try:
        return command()
    except UserError as err:
        _report(one_line(str(err)))
        return err.exit_code
    except BrokenPipeError:  # `dlrun runs | head`: the reader left
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        _report("interrupted")
        return 130
    except Exception as err:  # MLflow and OS failures still get one line
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _report(f"{type(err).__name__}: {one_line(str(err))[:500]} (set HYDRA_FULL_ERROR=1 for the traceback)")
        return 1


def _report(line: str) -> None:
    print(f"dlrun: error: {line}", file=sys.stderr, flush=True)
