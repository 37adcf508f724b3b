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


def resolve_run_id(client: Any, ref: str, key: str = "run") -> str:
    """The full id of the one active run whose id starts with ``ref``; a full id is returned as is.

    Raises RunNotFound (no run) or AmbiguousRunId (several), one line naming ``key``.
    """
    if RUN_ID.match(ref):
        return ref
    if not RUN_ID_PREFIX.match(ref):
        raise RunNotFound(f"{key}={ref}: not a run id (at least {MIN_PREFIX} of its 32 hex digits)")
    matches = _runs_starting_with(client, ref)
    if not matches:
        raise RunNotFound(f"{key}={ref}: no MLflow run id starts with {ref} in {client.tracking_uri}")
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:4])
        raise AmbiguousRunId(f"{key}={ref}: {len(matches)} runs start with {ref} ({shown}); give more digits")
    return matches[0]


def _runs_starting_with(client: Any, prefix: str) -> list[str]:
    """Ids of active runs in any experiment that start with ``prefix`` (at most a few, enough to tell)."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not experiment_ids:
        return []
    try:
        # The store filters (SQL LIKE on the run id column), so a big store is not read whole.
        runs = client.search_runs(experiment_ids, filter_string=f"attributes.run_id LIKE '{prefix}%'", max_results=10)
        return [r.info.run_id for r in runs]
    except MlflowException:
        # An older server without LIKE on run ids: page through all ids instead.
        found: list[str] = []
        token = None
        while True:
            page = client.search_runs(experiment_ids, max_results=5000, page_token=token)
            found += [r.info.run_id for r in page if r.info.run_id.startswith(prefix)]
            token = page.token
            if not token:
                return found
