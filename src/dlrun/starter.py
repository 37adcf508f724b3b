"""``dlrun init DIR``: a small project of your own to start from (a network, a data module, configs, a preset)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from dlrun.config.search_path import shipped_dir


def starter_dir() -> Path:
    """The starter project: inside the installed package, else ``examples/starter`` of the source checkout."""
    packaged = Path(__file__).resolve().parent / "starter_project"
    return packaged if packaged.is_dir() else shipped_dir("examples") / "starter"


def init_project(target: Path) -> list[Path]:
    """Copy the starter project into ``target`` (new or empty); return the files written."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target}: exists and is not an empty folder; name a new one")
    shutil.copytree(
        starter_dir(), target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "outputs", "*.db")
    )
    return sorted(p for p in target.rglob("*") if p.is_file())


def init_main(argv: list[str]) -> int:
    """``dlrun init DIR``: write the starter project and say how to run it."""
    parser = argparse.ArgumentParser(prog="dlrun init", description="Create a small dlrun project to start from.")
    parser.add_argument("directory", type=Path, help="new (or empty) folder for the project")
    args = parser.parse_args(argv)
    try:
        files = init_project(args.directory)
    except OSError as err:
        print(f"dlrun: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(files)} files to {args.directory}:")
    for path in files:
        print(f"  {path.relative_to(args.directory)}")
    print(f"next: cd {args.directory} && dlrun experiment=spirals   (README.md there says more)")
    return 0
