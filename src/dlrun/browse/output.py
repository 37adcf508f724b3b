"""Listings as CSV or JSON on stdout, so a table goes straight into pandas or a paper."""

from __future__ import annotations

import csv
import json
import math
import sys
from typing import Any


def write_csv(rows: list[dict[str, Any]], stream: Any = None) -> None:
    """All rows under one header (the union of their keys, in first-seen order); empty cells for None."""
    stream = stream or sys.stdout
    header: dict[str, None] = {}
    for row in rows:
        header.update(dict.fromkeys(row))
    writer = csv.DictWriter(stream, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def write_json(data: Any, stream: Any = None) -> None:
    """Indented JSON (NaN written as null)."""
    stream = stream or sys.stdout
    json.dump(_clean(data), stream, indent=2)
    stream.write("\n")


def _clean(data: Any) -> Any:
    if isinstance(data, float) and math.isnan(data):  # NaN is not JSON
        return None
    if isinstance(data, dict):
        return {k: _clean(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_clean(v) for v in data]
    return data
