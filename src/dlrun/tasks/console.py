"""What the tasks show in the terminal: the resolved config as a rich tree, and lines of metrics."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

GROUP_ORDER = ("data", "model", "objective", "optimizer", "scheduler", "trainer", "tracking", "paths")


def config_tree(cfg: DictConfig) -> Any:
    """A rich Tree of the resolved config, groups first, scalars last."""
    from rich.tree import Tree

    tree = Tree("[bold]config[/]", guide_style="dim")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keys = [k for k in GROUP_ORDER if k in resolved] + [k for k in resolved if k not in GROUP_ORDER]
    for key in keys:
        _add(tree, key, resolved[key])
    return tree


def _add(tree: Any, key: str, value: Any) -> None:
    if isinstance(value, dict):
        branch = tree.add(f"[bold cyan]{key}[/]")
        for sub_key, sub_value in value.items():
            _add(branch, str(sub_key), sub_value)
        if not value:
            branch.add("[dim](none)[/]")
    else:
        tree.add(f"{key}: [green]{value!r}[/]" if isinstance(value, str) else f"{key}: [yellow]{value}[/]")


def print_config(cfg: DictConfig | ListConfig) -> None:
    """Print the config tree to stdout."""
    from rich.console import Console

    Console().print(config_tree(cfg))


def metric(metrics: dict[str, Any], name: str | None) -> float | None:
    """``metrics[name]`` as a float, None when absent."""
    value = metrics.get(name) if name else None
    return float(value) if value is not None else None


def print_metrics(prefix: str, metrics: dict[str, Any], digits: str = ".4f") -> None:
    """One line of metrics on stdout (rank zero prints; others stay quiet)."""
    from dlrun.tracking.run import is_rank_zero

    if is_rank_zero() and metrics:
        print(prefix + "  ".join(f"{k} {float(v):{digits}}" for k, v in sorted(metrics.items())), flush=True)
