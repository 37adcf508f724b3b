"""Per-step costs taken off Lightning's hot path, each in one named place with the measurement behind it.

Objectives mix these in; nothing here changes what is computed, only how often Python does bookkeeping.
"""

from __future__ import annotations

from typing import Any

from dlrun._upstream import FX_NAME_ATTR


class DirectFxNameWrites:
    """Write ``_current_fx_name`` straight to the instance, past ``nn.Module.__setattr__``.

    Lightning writes ``_current_fx_name`` (a string) 42 times per training step; ``nn.Module.__setattr__``'s
    checks for parameters, modules and buffers, which never apply to it, cost 3-9 us each time here
    (1-3 % of an MNIST MLP step, bench/step_phases.py). torch's own ``Module.__init__`` bypasses them the
    same way. Put it before the LightningModule base in the class bases.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == FX_NAME_ATTR:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
