"""``dlrun runs``: list runs (sweeps as trees), ``show`` one, ``diff`` two, ``plot`` a metric of several."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dlrun.browse.entry import Parser, add_store_option, guarded
from dlrun.errors import ConfigError

EPILOG = """examples:
  dlrun runs                                  the latest runs of every experiment
  dlrun runs -e mnist -s FINISHED --sort test/acc
  dlrun runs --filter 'metrics.`val/acc` > 0.98' --csv > runs.csv
  dlrun runs show 3f2a9c1e                    one run (ids: 8+ first digits)
  dlrun runs diff 3f2a9c1e 77b0d2aa
  dlrun runs plot val/acc 3f2a9c1e 77b0d2aa   a PNG with both curves (a sweep's id: all its jobs)
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``dlrun runs`` command line."""
    parser = Parser(
        prog="dlrun runs",
        description="Browse the MLflow runs dlrun recorded (the store training writes to).",
        epilog=EPILOG,
        raw_epilog=True,
    )
    add_store_option(parser)
    listing = parser.add_argument_group("listing")
    listing.add_argument(
        "-e", "--experiment", action="append", default=[], metavar="NAME", help="only this experiment (repeatable)"
    )
    listing.add_argument(
        "-s",
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help="FINISHED, FAILED, KILLED or RUNNING (repeatable)",
    )
    listing.add_argument("-n", "--name", metavar="PATTERN", help="run name: a glob (mnist-*) or a substring")
    listing.add_argument(
        "-f",
        "--filter",
        metavar="EXPR",
        help="MLflow filter syntax, e.g. 'metrics.`val/acc` > 0.98' (single quotes: the shell runs `...`)",
    )
    listing.add_argument(
        "--last", type=int, default=20, metavar="N", help="the N latest runs, sweeps counting once (0: all; default 20)"
    )
    listing.add_argument("--sort", metavar="METRIC", help="largest first (the monitored metric: by its best value)")
    listing.add_argument("--asc", action="store_true", help="with --sort: smallest first")
    listing.add_argument("--top", type=int, default=0, metavar="N", help="with --sort: the N best runs with the metric")
    _add_formats(parser)

    sub = parser.add_subparsers(dest="command", metavar="{show,diff,plot,tag,note,delete,restore,sync}")
    show = sub.add_parser(
        "show", help="one run: config, metrics, tags, artifacts, commands to go on", prog="dlrun runs show"
    )
    show.add_argument("run", metavar="RUN", help="run id or its first 8+ digits")
    add_store_option(show, suppress=True)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as JSON")
    diff = sub.add_parser(
        "diff", help="two runs: differing config keys and their metrics, side by side", prog="dlrun runs diff"
    )
    diff.add_argument("run_a", metavar="RUN_A")
    diff.add_argument("run_b", metavar="RUN_B")
    add_store_option(diff, suppress=True)
    _add_formats(diff, suppress=True)
    plot = sub.add_parser("plot", help="a metric's curves of several runs in one PNG", prog="dlrun runs plot")
    plot.add_argument("metric", metavar="METRIC", help="e.g. val/acc, train/loss")
    plot.add_argument("runs", metavar="RUN", nargs="+", help="run ids (a sweep's parent: all its jobs)")
    plot.add_argument("-o", "--output", metavar="PNG", help="where to write the PNG (default: ./runs-METRIC.png)")
    add_store_option(plot, suppress=True)
    plot.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="also print the curves as JSON")
    from dlrun.browse.housekeeping import add_parsers

    add_parsers(sub, add_store_option)
    from dlrun.browse.sync import add_parser as add_sync_parser

    add_sync_parser(sub)
    return parser


def _add_formats(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else False
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--csv", action="store_true", default=default, help="CSV on stdout instead of a table")
    group.add_argument("--json", action="store_true", default=default, help="JSON on stdout instead of a table")


def runs_main(argv: list[str]) -> int:
    """``dlrun runs ...``: exit code 0, or one ``dlrun: error:`` line and the error's code."""
    return guarded(lambda: _dispatch(build_parser().parse_args(argv)))


def _dispatch(args: argparse.Namespace) -> int:
    from dlrun.browse.housekeeping import HANDLERS
    from dlrun.browse.sync import sync_runs

    handlers = {None: list_runs, "show": show_run, "diff": diff_runs, "plot": plot_runs, "sync": sync_runs, **HANDLERS}
    return handlers[args.command](args)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def list_runs(args: argparse.Namespace) -> int:
    """The listing: a table, or CSV/JSON rows."""
    from dlrun.browse import selection, table
    from dlrun.browse.store import open_reader

    if args.last < 0:
        raise ConfigError(f"--last {args.last}: must be >= 0 (0: all runs)")
    if args.top < 0 or (args.top and not args.sort):
        raise ConfigError(f"--top {args.top}: needs --sort METRIC and N >= 1")
    reader = open_reader(args.tracking_uri, Path.cwd(), need_filter=bool(args.filter))
    last = 0 if args.top else args.last  # the best N of all runs, not of the latest ones
    query = selection.Query(args.experiment, args.status, args.name, args.filter, last, args.sort, args.asc, args.top)
    top = selection.select(reader, query)
    if args.csv or args.json:
        from dlrun.browse.output import write_csv, write_json

        (write_csv if args.csv else write_json)(table.rows(top))
    else:
        table.render(top, _console(), reader.uri)
    return 0


def show_run(args: argparse.Namespace) -> int:
    """One run in detail."""
    from dlrun.browse import show
    from dlrun.browse.store import open_reader

    reader = open_reader(args.tracking_uri, Path.cwd())
    info = show.details(reader, args.run, args.tracking_uri)
    if getattr(args, "json", False):
        from dlrun.browse.output import write_json

        write_json(info)
    else:
        show.render(info, _console())
    return 0


def diff_runs(args: argparse.Namespace) -> int:
    """Two runs side by side."""
    from dlrun.browse import diff
    from dlrun.browse.output import write_csv, write_json
    from dlrun.browse.store import open_reader

    reader = open_reader(args.tracking_uri, Path.cwd())
    result = diff.compare(reader, args.run_a, args.run_b)
    if getattr(args, "csv", False):
        write_csv(diff.rows(result))
    elif getattr(args, "json", False):
        write_json(result)
    else:
        diff.render(result, _console())
    return 0


def plot_runs(args: argparse.Namespace) -> int:
    """Curves of one metric in a PNG; the path goes to stdout."""
    from dlrun.browse import plot
    from dlrun.browse.store import open_reader

    reader = open_reader(args.tracking_uri, Path.cwd())
    data = plot.curves(reader, args.metric, args.runs)
    path = plot.save(args.metric, data, Path(args.output).resolve() if args.output else plot.default_path(args.metric))
    if getattr(args, "json", False):
        from dlrun.browse.output import write_json

        write_json({"png": str(path), "metric": args.metric, "curves": data})
    else:
        print(path)
    return 0
