"""``dlrun runs sync``: send the spools that runs left in their folders while their tracking server was away."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dlrun.errors import UserError


def add_parser(sub: Any) -> None:
    """``dlrun runs sync [FOLDER ...]`` on ``dlrun runs``'s subparsers."""
    sync = sub.add_parser(
        "sync",
        help="send the records runs spooled while their tracking server was away",
        prog="dlrun runs sync",
    )
    sync.add_argument(
        "folders",
        metavar="FOLDER",
        nargs="*",
        help="run folders or folders above them (default: this folder: outputs/, multirun/, ...)",
    )


def find_spools(folders: list[Path]) -> list[Path]:
    """Every spool at or below ``folders``, oldest first."""
    from dlrun.tracking.spool import META, SPOOL_DIR

    found = {meta.parent for folder in folders for meta in folder.glob(f"**/{SPOOL_DIR}/{META}")}
    found |= {folder for folder in folders if (folder / META).is_file()}
    return sorted(found, key=lambda spool: (spool / META).stat().st_mtime)


def sync_runs(args: argparse.Namespace) -> int:
    """Send every spool found; 0 when all were sent, 1 when a server still does not answer."""
    from mlflow.tracking import MlflowClient

    from dlrun.tracking.spool import answers, limit_http_retries, run_of, send

    limit_http_retries()
    spools = find_spools([Path(f).resolve() for f in args.folders] or [Path.cwd()])
    if not spools:
        print("nothing to send: no spooled records here", flush=True)
        return 0
    away = []
    for spool in spools:
        uri, run_id = run_of(spool)
        if not answers(uri):
            away.append(f"{spool} ({uri})")
            continue
        count = send(spool, MlflowClient(uri))
        print(f"sent {count} records of run {run_id} to {uri}", flush=True)
    if away:
        raise UserError(f"tracking server still away; kept {len(away)} spool(s): {', '.join(away)}")
    return 0
