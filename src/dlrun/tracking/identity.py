"""A run's identity: a hash of its resolved config, so that a rerun sweep can tell which jobs are already done."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

CONFIG_HASH_TAG = "dlrun.config_hash"
# Keys that differ between two runs of the same experiment without changing what is computed.
# threads: the same run, faster or slower; rerun: which record a config came from, not what it is (a rerun's
# config hashes like its source's, and like configs recorded before the key existed).
VOLATILE_KEYS = ("paths.output_dir", "resources.threads", "rerun")


def config_hash(config: Mapping[str, Any], volatile: tuple[str, ...] = VOLATILE_KEYS) -> str:
    """16 hex digits of SHA-256 over the resolved config (plain dict) without its ``volatile`` dotted keys."""
    stable = _without(dict(config), volatile)
    text = json.dumps(stable, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _without(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    config = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in config.items()}
    for key in keys:
        node, *path = key.split(".")
        if not path:
            config.pop(node, None)
        elif isinstance(config.get(node), dict):
            config[node] = _without(config[node], (".".join(path),))
    return config


def newest_run(client: Any, experiment_id: str, filter_string: str) -> Any | None:
    """The most recently started run of the experiment matching MLflow's ``filter_string``, or None."""
    runs = client.search_runs(
        [experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def finished_twin(client: Any, experiment_id: str, digest: str) -> Any | None:
    """The newest FINISHED run of the experiment whose config hash is ``digest`` (an MLflow ``Run``), or None."""
    finished = f"tags.`{CONFIG_HASH_TAG}` = '{digest}' and attributes.status = 'FINISHED'"
    return newest_run(client, experiment_id, finished)
