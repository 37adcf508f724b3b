"""dlrun's Optuna sweeper for Hydra (``hydra/sweeper=optuna``): persistent, resumable, pruning searches.

Shipped inside dlrun's wheel; Hydra finds it in the ``hydra_plugins`` namespace package. The search
itself lives in ``dlrun.sweeping``.
"""
