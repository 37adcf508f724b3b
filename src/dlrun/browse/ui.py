"""``dlrun ui``: MLflow's UI on the store and artifact root dlrun writes to, stopped with all its processes.

It listens on 127.0.0.1 unless ``--host`` says otherwise. It has no logins: beyond this machine (another
``--host``) it serves only with ``--no-auth`` said explicitly, accepting the names it serves as Host headers
(``--allowed-hosts`` to change them); a team's server with logins is ``dlrun server``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from dlrun.browse.entry import Parser, add_store_option, guarded
from dlrun.errors import ConfigError, UserError
from dlrun.server.hosts import (
    allowed_hosts,
    check_host,
    client_url,
    is_loopback,
    local_url,
    open_to_others_warning,
    served_names,
)
from dlrun.server.process import add_listen_options, choose_port, supervise

ML_VIEW = "workflowType=machine_learning"  # MLflow 3 opens in its GenAI view; this selects "Model training"


def build_parser() -> argparse.ArgumentParser:
    """The ``dlrun ui`` command line."""
    parser = Parser(prog="dlrun ui", description="Start MLflow's UI on dlrun's store; Ctrl-C stops it.")
    add_store_option(parser)
    parser.add_argument("-e", "--experiment", metavar="NAME", help="open this experiment (default: the latest run's)")
    add_listen_options(parser, "comma-separated Host headers to accept (default: the names and addresses it serves)")
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="serve beyond this machine without logins (anyone reaching the port can change every run)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show MLflow's server log instead of keeping it in a file"
    )
    return parser


def ui_main(argv: list[str]) -> int:
    """``dlrun ui ...``: serve until interrupted; 0 after a clean stop."""
    return guarded(lambda: serve(build_parser().parse_args(argv)))


def serve(args: argparse.Namespace) -> int:
    """Start the server, print the experiment's URL, wait for a signal, stop everything."""
    from dlrun.browse.store import open_reader
    from dlrun.tracking.store import resolve_uri

    reader = open_reader(args.tracking_uri, Path.cwd())
    experiment_id = pick_experiment(reader, args.experiment)
    if not reader.uri.startswith("sqlite:///"):  # a server already serves this store and its UI
        print(page_url(reader.uri, experiment_id), flush=True)
        return 0
    _, artifact_root = resolve_uri(reader.uri, Path.cwd())
    check_host(args.host)
    if not is_loopback(args.host):
        if not args.no_auth:
            raise ConfigError(
                f"--host {args.host}: dlrun ui has no logins and would serve every run to anyone who can reach "
                "the port; use `dlrun server` for a team, or say --no-auth"
            )
        print(open_to_others_warning(args.host, "dlrun ui"), file=sys.stderr, flush=True)
    port = choose_port(args.host, args.port)
    names = served_names(args.host)
    hosts = args.allowed_hosts.split(",") if args.allowed_hosts else allowed_hosts(names, port)
    base = client_url(args.host, port, names)
    log = None if args.verbose else Path(tempfile.mkstemp(prefix="dlrun-ui-", suffix=".log")[1])
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        reader.uri,
        "--default-artifact-root",
        str(artifact_root),
        "--host",
        args.host,
        "--port",
        str(port),
        "--allowed-hosts",
        ",".join(hosts),
        "--workers",
        "1",  # one user, one browser: MLflow's default of 4 workers only costs memory
    ]
    print(f"starting MLflow UI on {reader.uri} ...", file=sys.stderr, flush=True)
    announce = lambda: print(page_url(base, experiment_id), flush=True)  # noqa: E731
    code = supervise(command, local_url(args.host, port), log, announce)
    if log is not None:
        log.unlink(missing_ok=True)  # a clean stop: nothing in it anyone needs
    return code


def pick_experiment(reader: Any, name: str | None) -> str | None:
    """The named experiment's id, else the experiment of the newest run (None for an empty store)."""
    experiments = reader.experiments()
    if name:
        for experiment_id, known in experiments.items():
            if known == name:
                return experiment_id
        raise UserError(
            f"--experiment {name}: no such experiment; the store has: {', '.join(sorted(experiments.values()))}"
        )
    runs = reader.runs(list(experiments))
    return runs[0].experiment_id if runs else None


def page_url(base: str, experiment_id: str | None) -> str:
    """The training-runs page of the experiment (MLflow's hash routes), or the UI's front page."""
    if experiment_id is None:
        return f"{base}/"
    return f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}"
