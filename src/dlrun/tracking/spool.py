"""A run's records kept in its folder while the MLflow server cannot be reached, and sent in order when it answers.

Every write of a run to an http(s) store goes through ``SpoolingClient``. While the server answers, a write is
sent at once. The first write that fails because the server is away (refused connection, timeout, 502/503/504
after MLflow's retries) switches the run to its spool, ``<run folder>/tracking-spool/``: that write and every
later one are appended there, in order (artifacts copied beside them, so a checkpoint rewritten later is sent
as it was), and training goes on. Every ``PROBE_EVERY_S`` seconds a write first asks the server's ``/health``;
once it answers, the spool is sent in order and writes go straight to the server again. A run that ends while
the server is still away leaves its spool (its end, FINISHED or FAILED, is its last record) for
``dlrun runs sync``. The records are pickled MLflow entities: a spool is read back only by the user who wrote it.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SPOOL_DIR = "tracking-spool"
RECORDS = "records.pkl"
META = "run.json"
PROBE_EVERY_S = 10.0
# The MlflowClient methods that write to a run: only these are spooled; reads still ask the server.
WRITES = frozenset(
    {
        "log_batch", "log_metric", "log_param", "set_tag", "delete_tag", "log_artifact", "log_artifacts",
        "log_text", "log_dict", "log_inputs", "set_terminated", "update_run",
    }
)  # fmt: skip
# MLflow's HTTP retry budget for dlrun's own client: a few quick retries, then the spool takes over (MLflow's
# default of 7 retries with a growing backoff stalls each write for minutes). A user's own setting wins.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def limit_http_retries() -> None:
    """Lower MLflow's retry budget for this process (unless the user set it): the spool waits instead."""
    for key, value in HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)


def is_unreachable(err: BaseException) -> bool:
    """True when ``err`` (or what caused it) says the server could not be reached, not that it refused a write."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
            return True
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        response = getattr(current, "response", None)
        if isinstance(current, requests.HTTPError) and getattr(response, "status_code", 0) in (502, 503, 504):
            return True
        text = str(current)
        if "Max retries exceeded" in text or "failed with timeout exception" in text or "Connection refused" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def answers(uri: str, timeout: float = 2.0) -> bool:
    """True when the server's ``/health`` answers 200 now."""
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def spool_folder(run_folder: Path) -> Path:
    """Where a run's spool lives inside its run folder."""
    return run_folder / SPOOL_DIR


class SpoolingClient:
    """An MlflowClient whose writes reach the server in order: at once while it answers, through the spool else."""

    def __init__(self, client: Any, uri: str, folder: Path, run_id: str) -> None:
        self._client = client
        self._uri = uri
        self._folder = folder
        self._run_id = run_id
        self._lock = threading.RLock()
        self._probed_at = 0.0
        self.offline = pending(folder)  # a spool left by an earlier command on this run is sent first
        self.tracking_uri = client.tracking_uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        return functools.partial(self._write, name) if name in WRITES else attr

    def _write(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self.offline:
                self.try_sending()
            if not self.offline:
                try:
                    return getattr(self._client, name)(*args, **kwargs)
                except Exception as err:
                    if not is_unreachable(err):
                        raise
                    self._go_offline(err)
            append(self._folder, self._uri, self._run_id, name, args, kwargs)
            return None

    def _go_offline(self, err: BaseException) -> None:
        self.offline = True
        self._probed_at = time.monotonic()
        reason = type(err).__name__
        print(
            f"dlrun: warning: tracking server {self._uri} cannot be reached ({reason}); training goes on and its "
            f"records are spooled in {self._folder}, sent in order when the server answers",
            file=sys.stderr,
            flush=True,
        )

    def try_sending(self, now: bool = False) -> bool:
        """Send the spool when the server answers (asked at most every PROBE_EVERY_S unless ``now``); True if sent."""
        with self._lock:
            if not self.offline:
                return True
            if not now and time.monotonic() - self._probed_at < PROBE_EVERY_S:
                return False
            self._probed_at = time.monotonic()
            if not answers(self._uri):
                return False
            try:
                count = send(self._folder, self._client)
            except Exception as err:
                if not is_unreachable(err):
                    raise
                return False
            self.offline = False
            print(
                f"dlrun: tracking server {self._uri} answers again; {count} spooled records sent",
                file=sys.stderr,
                flush=True,
            )
            return True

    def close(self) -> None:
        """At the run's end: a last try to send the spool; else say where it is and how to send it."""
        if self.offline and not self.try_sending(now=True):
            print(
                f"dlrun: warning: tracking server {self._uri} is still away: run {self._run_id}'s last records "
                f"are spooled in {self._folder}; `dlrun runs sync` sends them when it answers",
                file=sys.stderr,
                flush=True,
            )


def pending(folder: Path) -> bool:
    """True when ``folder`` holds records not sent yet."""
    return (folder / RECORDS).is_file()


def append(folder: Path, uri: str, run_id: str, name: str, args: tuple, kwargs: dict) -> None:
    """Add one write to the spool: timestamps fixed now, local files copied into the spool."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / META
    if not meta.is_file():
        meta.write_text(json.dumps({"tracking_uri": uri, "run_id": run_id}), encoding="utf-8")
    now_ms = int(time.time() * 1000)
    if name == "log_metric" and kwargs.get("timestamp") is None and len(args) < 4:
        kwargs = {**kwargs, "timestamp": now_ms}
    if name == "set_terminated" and kwargs.get("end_time") is None and len(args) < 3:
        kwargs = {**kwargs, "end_time": now_ms}
    if name in ("log_artifact", "log_artifacts"):
        args = (args[0], str(_keep(folder, Path(args[1]))), *args[2:])
    with (folder / RECORDS).open("ab") as records:
        pickle.dump((name, args, kwargs), records)


def _keep(folder: Path, path: Path) -> Path:
    """A copy of ``path`` (file or folder) inside the spool, under a fresh numbered folder."""
    files = folder / "files"
    files.mkdir(exist_ok=True)
    target = files / str(sum(1 for _ in files.iterdir())) / path.name
    target.parent.mkdir()
    if path.is_dir():
        shutil.copytree(path, target)
    else:
        shutil.copy2(path, target)
    return target


def read(folder: Path) -> list[tuple[str, tuple, dict]]:
    """The spooled writes, oldest first."""
    found = []
    with (folder / RECORDS).open("rb") as records:
        while True:
            try:
                found.append(pickle.load(records))
            except EOFError:
                return found


def send(folder: Path, client: Any) -> int:
    """Send the spooled writes in order through ``client``; remove the spool once all are sent; the count sent.

    A failure part way keeps the writes not sent yet (in order) and raises.
    """
    if not pending(folder):
        return 0
    records = read(folder)
    for done, (name, args, kwargs) in enumerate(records):
        try:
            getattr(client, name)(*args, **kwargs)
        except BaseException:
            rest = folder / f"{RECORDS}.rest"
            with rest.open("wb") as out:
                for record in records[done:]:
                    pickle.dump(record, out)
            rest.replace(folder / RECORDS)
            raise
    shutil.rmtree(folder)
    return len(records)


def run_of(folder: Path) -> tuple[str, str]:
    """(tracking URI, run id) of a spool."""
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    return meta["tracking_uri"], meta["run_id"]
