"""``dlrun server``: MLflow's tracking server for a team, in one command; ``dlrun server user add NAME``.

Wires MLflow's own parts: ``mlflow server`` on a database (``--backend-store-uri``), artifacts proxied over
HTTP into a folder on this machine (``--serve-artifacts --artifacts-destination``), the basic-auth app
(``--app-name basic-auth``) and the Host headers it accepts (``--allowed-hosts``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dlrun.browse.entry import Parser, guarded
from dlrun.errors import ConfigError
from dlrun.server import auth
from dlrun.server.backend import backend_url, check_database, optuna_storage, redacted
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

DEFAULT_DIR = "dlrun-server"


def build_parser() -> argparse.ArgumentParser:
    """The ``dlrun server`` command line."""
    parser = Parser(
        prog="dlrun server",
        description="Start the team's MLflow tracking server (logins, artifacts over HTTP); Ctrl-C stops it. "
        "`dlrun server user add NAME` adds a login.",
    )
    parser.add_argument(
        "--backend-store-uri",
        metavar="URL",
        help="database for runs: postgresql://USER:PASSWORD@HOST/DB (pip install 'dlrun[server]'), or "
        "sqlite:///PATH.db (default: sqlite:///DIR/mlflow.db)",
    )
    parser.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        help=f"the server's folder: artifacts/, the login store, its log (default ./{DEFAULT_DIR})",
    )
    parser.add_argument("--artifacts", metavar="FOLDER", help="where uploaded artifacts go (default DIR/artifacts)")
    add_listen_options(
        parser, "comma-separated Host headers clients may use (default: the names and addresses it serves)"
    )
    logins = parser.add_mutually_exclusive_group()
    logins.add_argument("--auth", action="store_true", help="logins on 127.0.0.1 too (always on for any other --host)")
    logins.add_argument(
        "--no-auth",
        action="store_true",
        help="no logins beyond this machine (anyone reaching the port may change every run)",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument("--verbose", action="store_true", help="MLflow's server log on the terminal, not in DIR")
    return parser


def build_user_parser() -> argparse.ArgumentParser:
    """The ``dlrun server user add NAME`` command line."""
    parser = Parser(
        prog="dlrun server user add",
        description=f"Add a login to the server's user store (password: ${auth.USER_PASSWORD_ENV}, else typed).",
    )
    parser.add_argument("name", help="the user's login name")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"the server's folder (default ./{DEFAULT_DIR})")
    parser.add_argument("--admin", action="store_true", help="an admin (manages users and every experiment)")
    return parser


def server_main(argv: list[str]) -> int:
    """``dlrun server ...`` or ``dlrun server user add NAME``."""
    if argv[:1] == ["user"]:
        return guarded(lambda: add_user(build_user_parser().parse_args(_after_add(argv[1:]))))
    return guarded(lambda: serve(build_parser().parse_args(argv)))


def _after_add(words: list[str]) -> list[str]:
    """The arguments after ``user add``; ConfigError for any other user command."""
    if words[:1] != ["add"]:
        raise ConfigError(f"dlrun server user {' '.join(words[:1])}: the one user command is `add NAME`")
    return words[1:]


def add_user(args: argparse.Namespace) -> int:
    """Add one login; the running server sees it at once."""
    folder = Path(args.dir).resolve()
    auth.add_user(folder, args.name, auth.password(auth.USER_PASSWORD_ENV, f"user {args.name}"), admin=args.admin)
    print(f"user {args.name} added to {folder / auth.USERS_FILE}{' (admin)' if args.admin else ''}", flush=True)
    return 0


def serve(args: argparse.Namespace) -> int:
    """Check everything, start ``mlflow server``, print the URL for clients, serve until a signal."""
    folder = Path(args.dir).resolve()
    store = backend_url(args.backend_store_uri, folder)
    check_host(args.host)
    logins = args.auth or not (is_loopback(args.host) or args.no_auth)
    env = dict(os.environ)
    if logins:
        auth.check_installed()
    if logins and not auth.has_users(folder):  # the first start creates the admin; later ones need no password
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = auth.password(auth.ADMIN_PASSWORD_ENV, "the admin user")
    if args.no_auth and not is_loopback(args.host):
        print(open_to_others_warning(args.host, "dlrun server"), file=sys.stderr, flush=True)
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: at least 1")
    check_database(store)
    artifacts = Path(args.artifacts).resolve() if args.artifacts else folder / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    port = choose_port(args.host, args.port)
    names = served_names(args.host)
    hosts = args.allowed_hosts.split(",") if args.allowed_hosts else allowed_hosts(names, port)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", store,
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", args.host, "--port", str(port),
        "--allowed-hosts", ",".join(hosts),
        "--workers", str(args.workers),
    ]  # fmt: skip
    if logins:
        command += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth.write_config(folder))
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = auth.secret_key(folder)
    log = None if args.verbose else folder / "server.log"
    url = client_url(args.host, port, names)

    def announce() -> None:
        print(url, flush=True)
        who = f"logins: {auth.ADMIN} (add users: dlrun server user add NAME --dir {folder})" if logins else "no logins"
        print(
            f"dlrun server: runs in {redacted(store)}, artifacts in {artifacts}, {who}; clients: "
            f"tracking.uri={url}" + (" with MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD" if logins else ""),
            file=sys.stderr,
            flush=True,
        )
        studies = optuna_storage(store)
        if studies:
            print(
                f"dlrun server: Optuna studies on the same database: hydra.sweeper.storage='{redacted(studies)}'",
                file=sys.stderr,
                flush=True,
            )

    print(f"starting MLflow server on {redacted(store)} ...", file=sys.stderr, flush=True)
    return supervise(command, local_url(args.host, port), log, announce, env)
