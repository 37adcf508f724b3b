"""Random-number state in checkpoints, so a resumed run draws the same dropout masks as an uninterrupted one."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


class RngState(pl.Callback):
    """Save the Python, NumPy, torch (and CUDA) generators with each checkpoint; restore them on resume.

    Lightning restores weights, optimizer, schedule and loop counters but not these; without them a
    resumed run trains on, but not along the same path as a run that was never stopped. Stored as plain
    lists and tensors (loadable with ``weights_only=True``).
    """

    def state_dict(self) -> dict[str, Any]:
        """The current generator states."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "python": _to_lists(random.getstate()),
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Put the saved generator states back (called by Lightning when fit resumes from a checkpoint)."""
        if not state_dict:
            return
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value
