"""Run ids as people type them: the full 32 hex digits, or a unique prefix of at least 8 (what tables show)."""

from __future__ import annotations

import re
from typing import Any

from dlrun.errors import UserError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MIN_PREFIX = 8
RUN_ID_PREFIX = re.compile(rf"^[0-9a-f]{{{MIN_PREFIX},32}}$")


class RunNotFound(UserError):
    """An MLflow run id (or prefix) that the tracking store does not know."""


class AmbiguousRunId(UserError):
    """A run id prefix that more than one run starts with."""


def looks_like_run_id(text: str) -> bool:
    """True for 8 to 32 lowercase hex digits: a full run id or a prefix of one."""
    return bool(RUN_ID_PREFIX.match(text))


def resolve_run_id(client: Any, ref: str, key: str = "run", deleted: bool = False) -> str:
    """The full id of the one active (or, with ``deleted``, deleted) run whose id starts with ``ref``.

    A full id is returned as is.

    Raises RunNotFound (no run) or AmbiguousRunId (several), one line naming ``key``.
    """
    if RUN_ID.match(ref):
        return ref
    if not RUN_ID_PREFIX.match(ref):
        raise RunNotFound(f"{key}={ref}: not a run id (at least {MIN_PREFIX} of its 32 hex digits)")
    matches = _runs_starting_with(client, ref, deleted)
    if not matches:
        raise RunNotFound(f"{key}={ref}: no MLflow run id starts with {ref} in {client.tracking_uri}")
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:4])
        raise AmbiguousRunId(f"{key}={ref}: {len(matches)} runs start with {ref} ({shown}); give more digits")
    return matches[0]


def _runs_starting_with(client: Any, prefix: str, deleted: bool = False) -> list[str]:
    """Ids of active (or deleted) runs in any experiment that start with ``prefix`` (a few, enough to tell)."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    view = ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY
    experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not experiment_ids:
        return []
    try:
        # The store filters (SQL LIKE on the run id column), so a big store is not read whole.
        like = f"attributes.run_id LIKE '{prefix}%'"
        runs = client.search_runs(experiment_ids, filter_string=like, run_view_type=view, max_results=10)
        return [r.info.run_id for r in runs]
    except MlflowException:
        # An older server without LIKE on run ids: page through all ids instead.
        found: list[str] = []
        token = None
        while True:
            page = client.search_runs(experiment_ids, run_view_type=view, max_results=5000, page_token=token)
            found += [r.info.run_id for r in page if r.info.run_id.startswith(prefix)]
            token = page.token
            if not token:
                return found
