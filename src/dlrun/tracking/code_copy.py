"""A recorded run's code rebuilt in a folder of its own, from its ``capsule/``: the reverse of ``capsule.code_record``.

In git: a clone of a repository that has the recorded commit, checked out at that commit, with the recorded
uncommitted diff (``capsule/code.diff``) applied. Outside git: the recorded archive unpacked, its digest checked.
The user's repository is only read (``git clone --shared`` borrows its objects): its working tree, index and
refs stay as they are.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import ConfigError, one_line
from dlrun.tracking.capsule import MAX_CODE_BYTES, code_digest, code_files


class CodeError(ConfigError):
    """The recorded code cannot be rebuilt; the line names the capsule file and why."""


@dataclass
class CodeCopy:
    """The rebuilt code: its root folder, the folder the run's job ran in, and where the commit came from."""

    root: Path
    workdir: Path
    origin: str
    changed_files: list[str]

    def describe(self, code: dict[str, Any]) -> str:
        """One line: what was rebuilt, and where."""
        if code.get("kind") == "git":
            head = f"commit {code['commit'][:12]} (from {self.origin})"
            changes = self.changed_files
            if not changes:
                return f"{head}, no uncommitted changes, in {self.root}"
            names = ", ".join(changes[:4]) + (", ..." if len(changes) > 4 else "")
            count = f"{len(changes)} file{'s' if len(changes) != 1 else ''}"
            return f"{head} + capsule/code.diff ({count}: {names}) in {self.root}"
        return f"capsule/code.tar.gz ({len(code.get('files', []))} files, digest checked) in {self.root}"


def rebuild_code(code: dict[str, Any], capsule: Path, into: Path, here: Path) -> CodeCopy:
    """Rebuild the code ``code`` (``code.json``) describes in the new folder ``into``; ``capsule`` holds its files.

    ``here`` is the working directory: its repository is searched for the commit first, then the recorded one.
    """
    if code.get("capped"):
        raise CodeError(
            f"capsule/code.json: the recorded code was over {MAX_CODE_BYTES // 1_000_000} MB and was cut "
            "(capped); it cannot be rebuilt"
        )
    if code.get("kind") == "git":
        return _from_git(code, capsule, into, here)
    if code.get("kind") == "folder":
        return _from_archive(code, capsule, into)
    raise CodeError(f"capsule/code.json: unknown kind {code.get('kind')!r} (a newer dlrun's record?)")


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, timeout=600, check=False)


def _repository_with(commit: str, folders: list[Path]) -> Path | None:
    """The first of ``folders`` inside a git repository that has ``commit``: that repository's top folder."""
    for folder in folders:
        if not folder.is_dir():
            continue
        top = _git("-C", str(folder), "rev-parse", "--show-toplevel").stdout.strip()
        if top and _git("-C", top, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0:
            return Path(top)
    return None


def _from_git(code: dict[str, Any], capsule: Path, into: Path, here: Path) -> CodeCopy:
    commit = code["commit"]
    repository = _repository_with(commit, [here, Path(code.get("root") or here)])
    if repository is not None:
        origin, clone = str(repository), ["clone", "--quiet", "--shared", "--no-checkout", str(repository), str(into)]
    elif code.get("remote"):
        origin, clone = code["remote"], ["clone", "--quiet", "--no-checkout", code["remote"], str(into)]
    else:
        raise CodeError(
            f"capsule/code.json: commit {commit[:12]} is neither in the repository of {here} "
            f"nor in {code.get('root')}; run dlrun rerun in a clone that has it"
        )
    checkout = ["-C", str(into), "checkout", "--quiet", "--detach", commit]
    for verb, args in (("clone", clone), ("checkout", checkout)):
        done = _git(*args)
        if done.returncode != 0:
            raise CodeError(f"capsule/code.json: git {verb} of {commit[:12]} from {origin} failed: {_first(done)}")
    changed: list[str] = []
    if code.get("dirty"):
        diff = capsule / "code.diff"
        if not diff.is_file():
            raise CodeError("capsule/code.diff: missing, yet code.json says the run had uncommitted changes")
        data = diff.read_bytes()
        if hashlib.sha256(data).hexdigest() != code.get("diff_sha256"):
            raise CodeError("capsule/code.diff: does not match its digest in capsule/code.json (a changed record)")
        done = _git("-C", str(into), "apply", "--whitespace=nowarn", str(diff.resolve()))
        if done.returncode != 0:
            raise CodeError(f"capsule/code.diff: does not apply at commit {commit[:12]}: {_first(done)}")
        changed = changed_files(data.decode("utf-8", errors="replace"))
    return CodeCopy(into, into / code.get("workdir", "."), origin, changed)


def _from_archive(code: dict[str, Any], capsule: Path, into: Path) -> CodeCopy:
    into.mkdir(parents=True, exist_ok=True)
    archive = capsule / "code.tar.gz"
    if code.get("files"):
        if not archive.is_file():
            raise CodeError("capsule/code.tar.gz: missing, yet code.json lists files")
        with tarfile.open(archive) as handle:
            handle.extractall(into, filter="data")  # no absolute paths, no links out of the folder
    if code_digest(into, code_files(into)) != code.get("sha256"):
        raise CodeError("capsule/code.tar.gz: its files do not match the digest in capsule/code.json")
    return CodeCopy(into, into, str(code.get("root")), [])


def changed_files(diff: str) -> list[str]:
    """The files a git-style diff changes or creates, in order."""
    return [line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git a/") and " b/" in line]


def _first(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return one_line(lines[0] if lines else f"exit status {done.returncode}")[:300]
