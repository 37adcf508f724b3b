"""The Hydra Sweeper plugin class; the search itself is ``dlrun.sweeping.sweeper.OptunaSearch``, imported on use."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

from hydra_plugins.dlrun_optuna_sweeper.config import DlrunOptunaSweeperConf  # noqa: F401 - registers the configs


class DlrunOptunaSweeper(Sweeper):
    """``hydra/sweeper=optuna``: a persistent Optuna study, resumed by the same command, trials pruned per epoch."""

    def __init__(self, **kwargs: Any) -> None:
        from dlrun.sweeping.sweeper import OptunaSearch

        self.search = OptunaSearch(**kwargs)

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        """Hand Hydra's context to the search (it builds the launcher)."""
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Run the search; ``arguments`` are the command's overrides."""
        return self.search.sweep(arguments)
