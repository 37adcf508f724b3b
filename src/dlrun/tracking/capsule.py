"""What it takes to run a run again, recorded with it: the code (commit and uncommitted changes) and the environment.

Artifacts under ``capsule/``: ``code.json`` (commit, branch, remote, what the diff holds), ``code.diff`` (the
working tree against HEAD, plus the project's untracked Python and YAML files as new files; capped at
``MAX_CODE_BYTES``, said in ``code.json`` when cut) or, outside git, ``code.tar.gz`` of those files with their
digest; ``environment.json`` (Python, platform, installed distributions, torch/CUDA/cuDNN, devices, threads,
and the environment variables that change numerics). Nothing here changes the user's working tree or index.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

MAX_CODE_BYTES = 1_000_000  # the diff (or archive) of a normal project is far smaller; a data file is not code
CODE_SUFFIXES = (".py", ".yaml", ".yml")
NUMERIC_ENV = (
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONHASHSEED",
    "TORCH_DETERMINISTIC",
    "NVIDIA_TF32_OVERRIDE",
)
# Not code: environments, caches, and what runs write (run dirs, MLflow artifacts).
SKIPPED_FOLDERS = {
    *(".git", ".venv", "venv", "__pycache__", "node_modules"),
    *("outputs", "multirun", "mlartifacts", "mlruns"),
}


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_record(folder: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``code.json`` and the files that hold the code of ``folder``: a diff against git HEAD, or an archive."""
    head = _git(folder, "rev-parse", "HEAD")
    if head is None:
        return _archive(folder)
    diff = _git(folder, "diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    untracked = [
        name
        for name in (_git(folder, "ls-files", "--others", "--exclude-standard") or "").splitlines()
        if name.endswith(CODE_SUFFIXES) and not SKIPPED_FOLDERS & set(Path(name).parts)  # not dlrun's own outputs
    ]
    top = Path((_git(folder, "rev-parse", "--show-toplevel") or str(folder)).strip())
    for name in untracked:
        try:
            text = (top / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines = text.splitlines(keepends=True)
        diff += "".join(difflib.unified_diff([], lines, "/dev/null", f"b/{name}"))
    data = diff.encode("utf-8")
    record = {
        "kind": "git",
        "commit": head.strip(),
        "branch": (_git(folder, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "remote": (_git(folder, "config", "--get", "remote.origin.url") or "").strip() or None,
        "root": str(top),
        "dirty": bool(diff),
        "untracked_files": untracked,
        "diff_bytes": len(data),
        "diff_sha256": hashlib.sha256(data).hexdigest(),
        "capped": len(data) > MAX_CODE_BYTES,
    }
    return record, ({"code.diff": data[:MAX_CODE_BYTES]} if data else {})


def _archive(folder: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Outside git: the folder's Python and YAML files as a .tar.gz (capped), with their digest."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix in CODE_SUFFIXES and p.is_file() and not SKIPPED_FOLDERS & set(p.relative_to(folder).parts)
    )
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    kept, capped = [], False
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in files:
            relative = str(path.relative_to(folder))
            content = path.read_bytes()
            digest.update(relative.encode() + b"\0" + content)
            if buffer.tell() + len(content) > MAX_CODE_BYTES:
                capped = True
                continue
            info = tarfile.TarInfo(relative)
            info.size, info.mtime = len(content), 0
            archive.addfile(info, io.BytesIO(content))
            kept.append(relative)
    record = {"kind": "folder", "root": str(folder), "files": kept, "sha256": digest.hexdigest(), "capped": capped}
    return record, ({"code.tar.gz": buffer.getvalue()} if kept else {})


def environment_record() -> dict[str, Any]:
    """Python, platform, installed distributions, torch/CUDA/cuDNN and devices, threads, numerics-changing env vars."""
    from importlib import metadata

    distributions = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            distributions[name.lower()] = dist.version
    record: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "distributions": dict(sorted(distributions.items())),
        "env": {name: os.environ[name] for name in NUMERIC_ENV if name in os.environ},
    }
    torch = sys.modules.get("torch")
    if torch is not None:  # imported by the run already: reading it costs nothing
        cuda = torch.cuda.is_available()
        record["torch"] = {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
        }
    return record


def log_capsule(run: Any, folder: Path) -> dict[str, Any]:
    """Record the capsule of a new run under ``capsule/``; returns ``code.json``'s content."""
    code, files = code_record(folder)
    run.log_text(json.dumps(code, indent=2), "capsule/code.json")
    for name, data in files.items():
        if name.endswith(".diff"):
            run.log_text(data.decode("utf-8", errors="replace"), f"capsule/{name}")
        else:
            _log_bytes(run, data, f"capsule/{name}")
    run.log_text(json.dumps(environment_record(), indent=2), "capsule/environment.json")
    tag = code.get("diff_sha256") or code.get("sha256")
    run.set_tags({"dlrun.code_digest": f"{code.get('commit', 'folder')[:12]}:{(tag or '')[:12]}"})
    return code


def _log_bytes(run: Any, data: bytes, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dlrun-capsule-") as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(data)
        run.log_artifact(path, str(Path(name).parent))
