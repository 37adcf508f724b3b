"""``task=summary``: build the data and the model, push one real batch through, print every layer. No training.

A module that cannot give its network's input for a batch still gets its layer and parameter table.
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from dlrun.models.inspection import LayerRecord


def layer_table(records: list[LayerRecord], title: str = "") -> Any:
    """A rich Table: name, type, input shape, output shape, parameters; totals in the footer."""
    from rich.table import Table

    top = [r for r in records if r.depth == 0]
    total, trainable = sum(r.params for r in top), sum(r.trainable for r in top)
    table = Table(title=title or None, show_footer=True, header_style="bold", footer_style="bold")
    table.add_column("layer", footer="total")
    table.add_column("type", footer=f"{len(records)} layers")
    table.add_column("input shape")
    table.add_column("output shape")
    table.add_column("params", justify="right", footer=f"{total:,}")
    for record in records:
        calls = f" ×{record.calls}" if record.calls > 1 else ""
        table.add_row(
            "  " * record.depth + record.name,
            record.type,
            record.input_shape + calls,
            record.output_shape,
            f"{record.params:,}",
        )
    frozen = total - trainable
    table.caption = (
        f"{total:,} parameters ({trainable:,} trainable, {frozen:,} frozen), {total * 4 / 2**20:.2f} MB as float32"
    )
    return table


def summary(cfg: DictConfig) -> list[LayerRecord]:
    """Check shapes and print the model's layer table for one real training batch; return the records."""
    from rich.console import Console

    from dlrun.logs import say_once
    from dlrun.models.inspection import layers, trace
    from dlrun.tasks.checks import check_config
    from dlrun.tasks.parts import example_batch, prepare

    check_config(cfg)
    parts = prepare(cfg)
    example = parts.objective.example_input(example_batch(parts.datamodule))
    module = parts.module
    if example is None:  # said once already (contracts.ObjectiveView.example_input): parameters, no shapes
        say_once("task=summary: layers and parameters only; shapes need example_input(batch) or example_input_array")
        records = layers(module)
    else:
        records = trace(module, example)
    # Off a terminal rich assumes 80 columns and would wrap the shapes; logs and pipes read better wide.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    net = parts.objective.network
    title = f"{type(net).__name__} in {type(module).__name__}" if net is not module else type(module).__name__
    console.print(layer_table(records, title=title))
    return records
