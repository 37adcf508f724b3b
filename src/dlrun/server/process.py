"""Running ``mlflow server`` until a signal, then stopping it with all its processes (``dlrun ui``, ``dlrun server``).

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dlrun.errors import UserError

GRACE_S = 10.0
START_TIMEOUT_S = 180.0
HUEY_ENV = "_MLFLOW_HUEY_STORAGE_PATH"  # mlflow.server.constants.HUEY_STORAGE_PATH_ENV_VAR


class Stop(Exception):
    """A signal asked the command to stop."""


def add_listen_options(parser: argparse.ArgumentParser, allowed_help: str) -> None:
    """``--host``, ``--port`` and ``--allowed-hosts``: where ``dlrun ui`` and ``dlrun server`` listen."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=5000, help="port (default 5000; 0: any free port)")
    parser.add_argument("--allowed-hosts", metavar="LIST", help=allowed_help)


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (argparse type)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port


def free_port(host: str) -> int:
    """A port nobody listens on right now."""
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """True when we could listen on ``host:port``."""
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def choose_port(host: str, port: int) -> int:
    """``port``, or any free one for 0; UserError naming ``--port`` when it is taken."""
    port = free_port(host) if port == 0 else port
    if not port_is_free(host, port):
        raise UserError(f"--port {port}: already in use on {host} (another server?); pass --port N or --port 0")
    return port


def supervise(
    command: list[str],
    base: str,
    log: Path | None,
    announce: Callable[[], None],
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``command`` in a session of its own, wait for ``base``/health, ``announce()``, serve until a signal,
    then stop the whole process group; 0 after a clean stop, UserError when the server stops on its own."""
    scratch: list[Path] = []
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with open(log or os.devnull, "w") as sink:
        out = None if log is None else sink
        # A session of its own: the terminal's Ctrl-C reaches only us, and we stop the whole group.
        server = subprocess.Popen(
            command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )
        try:
            wait_until_up(server, base, log)
            scratch = huey_folders(server.pid)
            announce()
            print(f"Ctrl-C stops it{f' (server log: {log})' if log else ''}", file=sys.stderr, flush=True)
            while server.poll() is None:
                time.sleep(0.5)
            raise UserError(f"mlflow server stopped on its own (exit {server.returncode}){log_tail(log)}")
        except Stop:
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


def wait_until_up(server: subprocess.Popen, base: str, log: Path | None) -> None:
    """Poll ``/health`` until the server answers; UserError if it dies or never answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"mlflow server exited with code {server.returncode} while starting{log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise UserError(f"mlflow server did not answer on {base} within {START_TIMEOUT_S:.0f} s{log_tail(log)}")


def log_tail(log: Path | None) -> str:
    """``: <last line of the server log> (log: PATH)``, or nothing without a log."""
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
