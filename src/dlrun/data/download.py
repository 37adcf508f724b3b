"""Fetching dataset files from public mirrors, with a progress bar and checksums."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from dlrun.data.errors import DataError


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    """Raise a DataError naming ``path`` if its md5 is not ``expected``."""
    actual = md5sum(path)
    if actual != expected:
        raise DataError(f"{path}: md5 {actual} does not match the published {expected}; delete it to download again")


def download(filename: str, md5: str, mirrors: Sequence[str], folder: Path, timeout: float = 30.0) -> Path:
    """Download ``filename`` from the first mirror that answers into ``folder`` and verify its md5."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    partial = target.with_name(target.name + ".part")
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                columns = (TextColumn(filename), BarColumn(), DownloadColumn(), TransferSpeedColumn())
                with Progress(*columns, transient=True) as progress, partial.open("wb") as out:
                    task = progress.add_task("download", total=total)
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        progress.advance(task, len(chunk))
        except (urllib.error.URLError, OSError) as err:
            failures.append(f"{url} ({getattr(err, 'reason', err)})")
            partial.unlink(missing_ok=True)
            continue
        partial.replace(target)
        verify_md5(target, md5)
        return target
    raise DataError(f"could not download {filename} into {folder}: " + "; ".join(failures))
