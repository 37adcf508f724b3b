"""``dlrun init DIR``: a small project of your own to start from (a network, a data module, configs, a preset)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from dlrun.config.search_path import shipped_dir


def starter_dir() -> Path:
    """The starter project: inside the installed package, else ``examples/starter`` of the source checkout."""
    packaged = Path(__file__).resolve().parent / "starter_project"
    return packaged if packaged.is_dir() else shipped_dir("examples") / "starter"


SKIPPED_FOLDERS = {"__pycache__", "outputs", "multirun"}  # what running the starter leaves, not the starter


def init_project(target: Path, add: bool = False) -> tuple[list[Path], list[Path]]:
    """Copy the starter project into ``target``; return (files written, files kept because they existed).

    Without ``add``, ``target`` must be new or empty; with it, files already there are kept as they are.
    """
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: is a file; name a folder")
    if not add and target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target}: exists and is not empty; name a new folder, or add --add to keep its files")
    source = starter_dir()
    written, kept = [], []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not path.is_file() or path.suffix == ".db" or SKIPPED_FOLDERS & set(relative.parts):
            continue
        destination = target / relative
        if destination.exists():
            kept.append(destination)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        written.append(destination)
    return written, kept


def init_main(argv: list[str]) -> int:
    """``dlrun init DIR``: write the starter project and say how to run it (mistakes: one line, exit 2)."""
    from dlrun.browse.entry import guarded

    return guarded(lambda: _init(argv))


def _init(argv: list[str]) -> int:
    from dlrun.browse.entry import Parser

    parser = Parser(prog="dlrun init", description="Create a small dlrun project to start from.")
    parser.add_argument("directory", type=Path, help="new (or empty) folder for the project")
    parser.add_argument("--add", action="store_true", help="add the files to an existing project; keep files it has")
    args = parser.parse_args(argv)
    try:
        files, kept = init_project(args.directory, add=args.add)
    except OSError as err:
        print(f"dlrun: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(files)} files to {args.directory}:")
    for path in files:
        print(f"  {path.relative_to(args.directory)}")
    if kept:
        print(f"kept {len(kept)} files already there (not overwritten):")
        for path in kept:
            print(f"  {path.relative_to(args.directory)}")
    print(f"next: cd {args.directory} && dlrun experiment=spirals   (README.md there says more)")
    return 0
