"""``dlrun runs tag|note|delete|restore``: the few changes a user makes to records by hand, through MLflow's client.

dlrun's own tags (``dlrun.*``) and MLflow's (``mlflow.*``) are not set by hand: they are what the records
promise. ``delete`` is MLflow's soft delete (the run leaves listings; artifacts stay until ``mlflow gc``),
``restore`` undoes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dlrun.errors import ConfigError

NOTE_TAG = "mlflow.note.content"  # MLflow's run description, shown in its UI


def _client(args: argparse.Namespace) -> Any:
    from mlflow.tracking import MlflowClient

    from dlrun.browse.store import tracking_uri

    return MlflowClient(tracking_uri(args.tracking_uri, Path.cwd()))


def tag_run(args: argparse.Namespace) -> int:
    """``dlrun runs tag RUN KEY=VALUE...``: set tags (``KEY=`` with nothing after it deletes the tag)."""
    from dlrun.tracking.run_ids import resolve_run_id

    pairs = []
    for item in args.tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"dlrun runs tag: {item!r}: expected KEY=VALUE")
        if key.startswith(("dlrun.", "mlflow.")):
            raise ConfigError(f"dlrun runs tag: {key}: dlrun's and MLflow's own tags are not set by hand")
        pairs.append((key, value))
    client = _client(args)
    run_id = resolve_run_id(client, args.run, "run")
    for key, value in pairs:
        if value:
            client.set_tag(run_id, key, value)
        elif key in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, key)
    print(f"{run_id}: " + ", ".join(f"{k}={v}" if v else f"{k} removed" for k, v in pairs))
    return 0


def note_run(args: argparse.Namespace) -> int:
    """``dlrun runs note RUN TEXT``: the run's description (MLflow's note); empty text removes it."""
    from dlrun.tracking.run_ids import resolve_run_id

    client = _client(args)
    run_id = resolve_run_id(client, args.run, "run")
    text = " ".join(args.text)
    if text:
        client.set_tag(run_id, NOTE_TAG, text)
    elif NOTE_TAG in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, NOTE_TAG)
    print(f"{run_id}: note {'set' if text else 'removed'}")
    return 0


def delete_runs(args: argparse.Namespace) -> int:
    """``dlrun runs delete RUN...``: soft-delete runs (a sweep's parent takes its jobs along)."""
    from dlrun.tracking.run_ids import resolve_run_id

    client = _client(args)
    ids = [resolve_run_id(client, ref, "run") for ref in args.runs]
    children = _children(client, ids)
    for run_id in [*ids, *children]:
        client.delete_run(run_id)
    extra = f" and {len(children)} job runs of its sweep" if children else ""
    print(f"deleted {len(ids)} run(s){extra}; undo with: dlrun runs restore {' '.join(r[:8] for r in ids)}")
    return 0


def restore_runs(args: argparse.Namespace) -> int:
    """``dlrun runs restore RUN...``: bring soft-deleted runs (and a sweep parent's jobs) back."""
    from mlflow.entities import ViewType

    from dlrun.tracking.run_ids import resolve_run_id

    client = _client(args)
    ids = [resolve_run_id(client, ref, "run", deleted=True) for ref in args.runs]
    children = _children(client, ids, ViewType.DELETED_ONLY)
    for run_id in [*ids, *children]:
        client.restore_run(run_id)
    print(f"restored {len(ids) + len(children)} run(s)")
    return 0


def _children(client: Any, parents: list[str], view: Any = None) -> list[str]:
    """Runs whose ``mlflow.parentRunId`` is one of ``parents`` (a sweep's jobs)."""
    from mlflow.entities import ViewType

    experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    found = []
    for parent in parents:
        runs = client.search_runs(
            experiment_ids,
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
            run_view_type=view or ViewType.ACTIVE_ONLY,
            max_results=10_000,
        )
        found += [r.info.run_id for r in runs]
    return found


def add_parsers(sub: Any, add_store_option: Any) -> None:
    """The four subcommands on ``dlrun runs``'s subparsers."""
    tag = sub.add_parser("tag", help="set tags on a run (KEY=VALUE; KEY= removes one)", prog="dlrun runs tag")
    tag.add_argument("run", metavar="RUN")
    tag.add_argument("tags", metavar="KEY=VALUE", nargs="+")
    note = sub.add_parser("note", help="the run's description (MLflow's note)", prog="dlrun runs note")
    note.add_argument("run", metavar="RUN")
    note.add_argument("text", metavar="TEXT", nargs="*")
    delete = sub.add_parser("delete", help="soft-delete runs (restore brings them back)", prog="dlrun runs delete")
    delete.add_argument("runs", metavar="RUN", nargs="+")
    restore = sub.add_parser("restore", help="bring deleted runs back", prog="dlrun runs restore")
    restore.add_argument("runs", metavar="RUN", nargs="+")
    for parser in (tag, note, delete, restore):
        add_store_option(parser, suppress=True)


HANDLERS = {"tag": tag_run, "note": note_run, "delete": delete_runs, "restore": restore_runs}
