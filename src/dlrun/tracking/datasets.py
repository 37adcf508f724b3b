"""A run's data set as MLflow dataset inputs (name, source files, content digest), shown in the UI's Datasets column."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CONTEXT_TAG = "mlflow.data.context"  # MLflow's tag for how a run used a dataset (training, eval, ...)
CACHE_FILE = "digests.json"
CHUNK = 1 << 20


def log_dataset_inputs(run: Any, name: str, files: dict[str, list[Path]]) -> None:
    """Log one dataset input per distinct file set of ``files`` (split -> paths), tagged with its split(s).

    Splits read from the same files (MNIST's train and val both come from the training files) share one
    input with context ``train,val``: MLflow keeps one input per (name, digest) and run, so two inputs with
    equal contents would collapse into one with a single, misleading context.
    Does nothing for a run without an MLflow record (``NullRun``) or without files.
    """
    if getattr(run, "run_id", None) is None or not any(files.values()):
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    groups: dict[tuple[Path, ...], list[str]] = {}
    for split, paths in files.items():
        if paths:
            groups.setdefault(tuple(Path(p).resolve() for p in paths), []).append(split)
    cache = DigestCache.load()
    inputs = []
    for paths, splits in groups.items():
        dataset = Dataset(
            name=name,
            digest=files_digest(paths, cache),
            source_type="local",
            source=json.dumps({"uri": _common_folder(paths).as_uri(), "files": [p.name for p in paths]}),
            profile=json.dumps({"files": len(paths), "bytes": sum(p.stat().st_size for p in paths)}),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, ",".join(splits))]))
    cache.save()
    run.client.log_inputs(run.run_id, datasets=inputs)


def files_digest(paths: tuple[Path, ...] | list[Path], cache: DigestCache | None = None) -> str:
    """A digest of the files' names and contents (16 hex digits), in the given order."""
    cache = cache or DigestCache({})
    total = hashlib.sha256()
    for path in paths:
        total.update(path.name.encode("utf-8") + b"\0" + cache.file_sha256(path).encode("ascii") + b"\0")
    return total.hexdigest()[:16]


class DigestCache:
    """File hashes keyed by (path, size, mtime), kept in the user's cache folder: big data sets are hashed once."""

    def __init__(self, entries: dict[str, str], path: Path | None = None) -> None:
        self.entries = entries
        self.path = path
        self.changed = False

    @staticmethod
    def location() -> Path:
        """``$XDG_CACHE_HOME/dlrun/digests.json`` (``~/.cache/dlrun/digests.json`` by default)."""
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(root) / "dlrun" / CACHE_FILE

    @classmethod
    def load(cls) -> DigestCache:
        """The cache on disk, or an empty one when it is missing or unreadable."""
        path = cls.location()
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = {}
        return cls(entries if isinstance(entries, dict) else {}, path)

    def file_sha256(self, path: Path) -> str:
        """sha256 of the file's bytes; read only when its size or mtime changed since last time."""
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self.entries:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
            stale = [k for k in self.entries if k.startswith(f"{path}|")]  # the file's earlier versions
            for old in stale:
                del self.entries[old]
            self.entries[key] = digest.hexdigest()
            self.changed = True
        return self.entries[key]

    def save(self) -> None:
        """Write the cache back if it learned something (best effort: a read-only home only costs time)."""
        if not self.changed or self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries), encoding="utf-8")
            tmp.replace(self.path)  # atomic: parallel sweep jobs never read half a file
        except OSError:
            pass


def _common_folder(paths: tuple[Path, ...]) -> Path:
    """The deepest folder holding all the files."""
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def recheck(source: str, digest: str, cache: DigestCache | None = None) -> str:
    """A recorded dataset input checked against the files here: ``same``, ``different (now D)`` or ``missing F``."""
    import urllib.parse
    import urllib.request

    try:
        described = json.loads(source)
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(described["uri"]).path))
        paths = [folder / name for name in described["files"]]
    except (ValueError, KeyError, TypeError):
        return "not checked (no local files recorded)"
    missing = [p for p in paths if not p.is_file()]
    if missing:
        return f"missing {missing[0]}"
    now = files_digest(paths, cache)
    return "same" if now == digest else f"different (now {now})"
