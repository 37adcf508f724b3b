"""A run's artifacts for ``runs show``: read straight from disk for local stores, through MLflow otherwise."""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dlrun.browse.records import RunRecord

MAX_LISTED = 200


def local_root(run: RunRecord) -> Path | None:
    """The run's artifact folder when it is on this machine (``file://`` artifact URI)."""
    if run.artifact_uri.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(run.artifact_uri).path))
    if run.artifact_uri.startswith("/"):
        return Path(run.artifact_uri)
    return None


def list_artifacts(reader: Any, run: RunRecord) -> list[tuple[str, int | None]]:
    """(relative path, size in bytes) of the run's artifact files, at most MAX_LISTED of them."""
    root = local_root(run)
    if root is not None:
        found = []
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder) / name
                found.append((str(path.relative_to(root)), path.stat().st_size))
                if len(found) >= MAX_LISTED:
                    return found
        return found
    client, found, todo = reader.client(), [], [None]
    while todo and len(found) < MAX_LISTED:
        for info in client.list_artifacts(run.run_id, todo.pop(0)):
            if info.is_dir:
                todo.append(info.path)
            else:
                found.append((info.path, info.file_size))
    return found[:MAX_LISTED]


def read_text(reader: Any, run: RunRecord, name: str) -> str | None:
    """The text of artifact ``name`` (e.g. ``config.yaml``), or None when the run has none."""
    root = local_root(run)
    if root is not None:
        path = root / name
        return path.read_text(encoding="utf-8") if path.is_file() else None
    try:
        local = reader.client().download_artifacts(run.run_id, name)
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        return None
    return Path(local).read_text(encoding="utf-8")
