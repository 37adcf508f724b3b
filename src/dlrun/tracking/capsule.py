"""What it takes to run a run again, recorded with it: the code (commit and uncommitted changes) and the environment.

Artifacts under ``capsule/``: ``code.json`` (commit, branch, remote, the job's folder inside the repository,
what the diff holds), ``code.diff`` (the working tree against HEAD as ``git apply`` takes it, plus the project's
untracked Python and YAML files as new files; an untracked file over ``MAX_UNTRACKED_BYTES`` is left out and
named, the whole capped at ``MAX_CODE_BYTES``, both said in ``code.json`` and on stderr) or, outside git,
``code.tar.gz`` of those files with their digest; ``environment.json`` (Python, platform, installed
distributions, torch/CUDA/cuDNN, devices, threads and numerics switches, and the environment variables that
change numerics). Nothing here changes the user's working tree or index. ``dlrun rerun`` reads them back.
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

from dlrun.logs import say_once

MAX_CODE_BYTES = 1_000_000  # the diff (or archive) of a normal project is far smaller; a data file is not code
MAX_UNTRACKED_BYTES = 200_000  # an untracked .py/.yaml this big is generated output, not code someone wrote
CODE_SUFFIXES = (".py", ".yaml", ".yml")
NUMERIC_ENV = (
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_CBWR",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
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
    # --binary: a changed tracked binary file (an image, a small tensor) still applies on rerun.
    diff = _git(folder, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff") or ""
    top = Path((_git(folder, "rev-parse", "--show-toplevel") or str(folder)).strip())
    untracked, left_out = [], []
    for name in (_git(folder, "ls-files", "--others", "--exclude-standard") or "").splitlines():
        path = top / name
        if not name.endswith(CODE_SUFFIXES) or SKIPPED_FOLDERS & set(Path(name).parts):  # not dlrun's own outputs
            continue
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(data) > MAX_UNTRACKED_BYTES:
            left_out.append(name)
            continue
        untracked.append(name)
        diff += new_file_patch(name, text, executable=os.access(path, os.X_OK))
    data = diff.encode("utf-8")
    record = {
        "kind": "git",
        "commit": head.strip(),
        "branch": (_git(folder, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "remote": (_git(folder, "config", "--get", "remote.origin.url") or "").strip() or None,
        "root": str(top),
        "workdir": os.path.relpath(folder.resolve(), top.resolve()),  # where the job ran, inside the repository
        "dirty": bool(diff),
        "untracked_files": untracked,
        "left_out": left_out,
        "diff_bytes": len(data),
        "diff_sha256": hashlib.sha256(data).hexdigest(),
        "capped": len(data) > MAX_CODE_BYTES,
    }
    return record, ({"code.diff": data[:MAX_CODE_BYTES]} if data else {})


def new_file_patch(name: str, text: str, executable: bool = False) -> str:
    """An untracked file as ``git diff`` writes a new file, so that ``git apply`` recreates it exactly."""
    lines = text.splitlines(keepends=True)
    head = f"diff --git a/{name} b/{name}\nnew file mode {'100755' if executable else '100644'}\n"
    if not lines:
        return head
    body = "".join(difflib.unified_diff([], lines, "/dev/null", f"b/{name}"))
    if not text.endswith("\n"):  # difflib leaves the last line open; git marks it
        body += "\n\\ No newline at end of file\n"
    return head + body


def _archive(folder: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Outside git: the folder's Python and YAML files as a .tar.gz (capped), with their digest."""
    files = code_files(folder)
    buffer = io.BytesIO()
    kept, capped = [], False
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in files:
            relative = str(path.relative_to(folder))
            content = path.read_bytes()
            if buffer.tell() + len(content) > MAX_CODE_BYTES:
                capped = True
                continue
            info = tarfile.TarInfo(relative)
            info.size, info.mtime = len(content), 0
            archive.addfile(info, io.BytesIO(content))
            kept.append(relative)
    record = {
        "kind": "folder",
        "root": str(folder),
        "workdir": ".",
        "files": kept,
        "sha256": code_digest(folder, files),
        "capped": capped,
    }
    return record, ({"code.tar.gz": buffer.getvalue()} if kept else {})


def code_files(folder: Path) -> list[Path]:
    """The folder's Python and YAML files (not in environments, caches or run outputs), in a fixed order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix in CODE_SUFFIXES and p.is_file() and not SKIPPED_FOLDERS & set(p.relative_to(folder).parts)
    )


def code_digest(folder: Path, files: list[Path]) -> str:
    """sha256 over the files' paths (relative to ``folder``) and contents: ``code.json``'s ``sha256``."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def environment_record() -> dict[str, Any]:
    """Python, platform, installed distributions, torch/CUDA/cuDNN and devices, threads, numerics-changing env vars."""
    record: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "distributions": installed_distributions(),
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
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "matmul_precision": torch.get_float32_matmul_precision(),
        }
    return record


def installed_distributions() -> dict[str, str]:
    """Every installed distribution's name (lower case) and version, sorted by name.

    Read from the head of each METADATA file: ``importlib.metadata``'s own parse of the whole file (an email
    message) took 0.23 s for 123 distributions here, this 0.03 s, on every run.
    """
    from importlib import metadata

    found = {}
    for dist in metadata.distributions():
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        fields = dict(line.split(":", 1) for line in text.split("\n\n", 1)[0].splitlines() if ":" in line[:40])
        name, version = fields.get("Name", "").strip(), fields.get("Version", "").strip()
        if name:
            found[name.lower()] = version
    return dict(sorted(found.items()))


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
    for note in capsule_notes(code):
        say_once(note)
    return code


def capsule_notes(code: dict[str, Any]) -> list[str]:
    """What the capsule could not hold, one line each (said on stderr when the run opens)."""
    notes = []
    if code.get("left_out"):
        notes.append(
            f"capsule: untracked {', '.join(code['left_out'][:5])} left out of capsule/code.diff "
            f"(over {MAX_UNTRACKED_BYTES // 1000} KB each; commit them or add them to .gitignore)"
        )
    if code.get("capped"):
        notes.append(
            f"capsule: the code is over {MAX_CODE_BYTES // 1_000_000} MB; capsule/ holds only part of it "
            "(dlrun rerun cannot rebuild it; commit your changes)"
        )
    return notes


def read_capsule(folder: Path) -> dict[str, Any]:
    """A run's ``capsule/`` folder (local or downloaded) as read back: code.json, environment.json, code.diff text."""
    found: dict[str, Any] = {}
    for name in ("code.json", "environment.json"):
        if (folder / name).is_file():
            found[name] = json.loads((folder / name).read_text(encoding="utf-8"))
    if (folder / "code.diff").is_file():
        found["code.diff"] = (folder / "code.diff").read_text(encoding="utf-8", errors="replace")
    return found


def environment_differences(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """What differs between two ``environment.json`` records, as ``{key, a, b}``: the system, torch, the
    numerics environment variables (``$NAME``), then the distributions by name."""
    torch_a, torch_b = a.get("torch") or {}, b.get("torch") or {}
    env_a, env_b = a.get("env") or {}, b.get("env") or {}
    dists_a, dists_b = a.get("distributions") or {}, b.get("distributions") or {}
    pairs = [(key, a.get(key), b.get(key)) for key in ("python", "platform")]
    if torch_a and torch_b:  # a record without torch (it was not imported) says nothing about it
        keys = ("cuda", "cudnn", "devices", "threads", "deterministic", "matmul_precision")
        pairs += [(f"torch {key}", torch_a[key], torch_b[key]) for key in keys if key in torch_a and key in torch_b]
    pairs += [(f"${name}", env_a.get(name), env_b.get(name)) for name in sorted(set(env_a) | set(env_b))]
    pairs += [(name, dists_a.get(name), dists_b.get(name)) for name in sorted(set(dists_a) | set(dists_b))]
    return [{"key": key, "a": x, "b": y} for key, x, y in pairs if x != y]


def _log_bytes(run: Any, data: bytes, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dlrun-capsule-") as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(data)
        run.log_artifact(path, str(Path(name).parent))
