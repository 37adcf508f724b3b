"""``dlrun ui``: MLflow's UI on the store and artifact root dlrun writes to, stopped with all its processes.

``mlflow server`` starts uvicorn workers, a job runner and several huey consumers. Killed on its own it
leaves the job consumers behind, so the server runs in a session (process group) of its own, and on
Ctrl-C, SIGTERM or SIGHUP the whole group gets SIGTERM, then SIGKILL after a grace period, and any
descendant that left the group is killed by pid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dlrun.browse.entry import Parser, add_store_option, guarded
from dlrun.errors import UserError

GRACE_S = 10.0
START_TIMEOUT_S = 180.0
HUEY_ENV = "_MLFLOW_HUEY_STORAGE_PATH"  # mlflow.server.constants.HUEY_STORAGE_PATH_ENV_VAR
ML_VIEW = "workflowType=machine_learning"  # MLflow 3 opens in its GenAI view; this selects "Model training"


class Stop(Exception):
    """A signal asked ``dlrun ui`` to stop."""


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (argparse type)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The ``dlrun ui`` command line."""
    parser = Parser(prog="dlrun ui", description="Start MLflow's UI on dlrun's store; Ctrl-C stops it.")
    add_store_option(parser)
    parser.add_argument("-e", "--experiment", metavar="NAME", help="open this experiment (default: the latest run's)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=5000, help="port (default 5000; 0: any free port)")
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
    port = free_port(args.host) if args.port == 0 else args.port
    if not port_is_free(args.host, port):
        raise UserError(f"--port {port}: already in use on {args.host} (another UI?); pass --port N or --port 0")
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '') else args.host}:{port}"
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
        "--workers",
        "1",  # one user, one browser: MLflow's default of 4 workers only costs memory
    ]
    scratch: list[Path] = []
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with open(log or os.devnull, "w") as sink:
        out = None if args.verbose else sink
        # A session of its own: the terminal's Ctrl-C reaches only us, and we stop the whole group.
        server = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            print(f"starting MLflow UI on {reader.uri} ...", file=sys.stderr, flush=True)
            wait_until_up(server, base, log)
            scratch = huey_folders(server.pid)
            print(page_url(base, experiment_id), flush=True)
            print(f"Ctrl-C stops it{f' (server log: {log})' if log else ''}", file=sys.stderr, flush=True)
            while server.poll() is None:
                time.sleep(0.5)
            raise UserError(f"mlflow server stopped on its own (exit {server.returncode}){_log_tail(log)}")
        except Stop:
            if log is not None:
                log.unlink(missing_ok=True)  # a clean stop: nothing in it anyone needs
            return 0
        finally:
            for signum in previous:  # a second Ctrl-C must not cut the cleanup short
                signal.signal(signum, signal.SIG_IGN)
            stop_group(server)
            for folder in scratch:
                shutil.rmtree(folder, ignore_errors=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _raise_stop(signum: int, frame: Any) -> None:
    raise Stop(signal.Signals(signum).name)


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


def check_host(host: str) -> None:
    """UserError naming ``--host`` when it is no address this machine can listen on."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise UserError(f"--host {host}: not a host name or address ({err})") from None
    with socket.socket(infos[0][0]) as sock:
        try:
            sock.bind((host, 0))
        except OSError as err:
            raise UserError(f"--host {host}: this machine cannot listen there ({err.strerror})") from None


def free_port(host: str) -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """True when we could listen on ``host:port``."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_until_up(server: subprocess.Popen, base: str, log: Path | None) -> None:
    """Poll ``/health`` until the server answers; UserError if it dies or never answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"mlflow server exited with code {server.returncode} while starting{_log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise UserError(f"mlflow server did not answer on {base} within {START_TIMEOUT_S:.0f} s{_log_tail(log)}")


def _log_tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return f": {lines[-1].strip()[:300]} (log: {log})" if lines else ""


def descendants(pid: int) -> list[int]:
    """Pids of all processes below ``pid`` (children, grandchildren, ...)."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def huey_folders(pid: int) -> list[Path]:
    """The scratch folder (in /dev/shm or the temp dir) the server made for its job queues: removed after it stops."""
    import psutil

    found = set()
    for child in descendants(pid):
        try:
            folder = psutil.Process(child).environ().get(HUEY_ENV)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        # Only a folder MLflow made with mkdtemp: never anything a user pointed it at.
        if (
            folder
            and Path(folder).parent in (Path("/dev/shm"), Path(tempfile.gettempdir()))
            and Path(folder).name.startswith("tmp")
        ):
            found.add(Path(folder))
    return sorted(found)


def stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to whatever is left after GRACE_S."""
    import psutil

    pids = [server.pid, *descendants(server.pid)]  # taken first: children may leave the group
    _signal_group(server.pid, signal.SIGTERM)
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    _signal_group(server.pid, signal.SIGKILL)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
