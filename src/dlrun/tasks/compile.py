"""``compile.*``: ``torch.compile`` of the network an objective trains, without changing its state dict.

The network is compiled in place with ``nn.Module.compile``: its ``forward`` calls go through the
compiled graph, while the module object, its parameters and its ``state_dict`` keys stay exactly those
of the uncompiled network. ``torch.compile(net)`` would instead wrap it in an ``OptimizedModule`` whose
state-dict keys gain an ``_orig_mod.`` prefix, which breaks loading checkpoints into uncompiled
models (resume without ``compile.enabled``, eval, ``dlrun.load``, the logged MLflow model). Copies and
pickles of a compiled module (``copy.deepcopy``, ``torch.save``) come out uncompiled.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from torch import nn

from dlrun._upstream import COMPILE_PREFIX, torch_compiled_original, torch_is_compiled_in_place

MODES = ("default", "reduce-overhead", "max-autotune")
PREFIX = COMPILE_PREFIX


def check_compile_config(node: Mapping[str, Any] | None) -> None:
    """Raise ConfigError naming the key when ``compile.*`` holds an unknown mode or backend (before any run opens)."""
    from dlrun.errors import ConfigError

    node = node or {}
    unknown = sorted(set(node) - {"enabled", "mode", "backend"})
    if unknown:
        raise ConfigError(f"compile.{unknown[0]}: unknown key; allowed: enabled, mode, backend")
    if not isinstance(node.get("enabled", False), bool):
        raise ConfigError(f"compile.enabled: expected true or false, got {node.get('enabled')!r}")
    if node.get("mode", "default") not in MODES:
        raise ConfigError(f"compile.mode: must be one of {', '.join(MODES)}, got {node.get('mode')!r}")
    backend = node.get("backend", "inductor")
    import torch

    backends = torch.compiler.list_backends(exclude_tags=())
    if backend not in backends:
        raise ConfigError(
            f"compile.backend: {backend!r} is not a torch.compile backend (e.g. inductor, eager, aot_eager)"
        )


def compile_target(module: nn.Module) -> nn.Module:
    """What gets compiled: ``module.net`` for a dlrun objective, else the module itself (plain Lightning)."""
    net = getattr(module, "net", None)
    return net if isinstance(net, nn.Module) else module


def compile_network(
    module: nn.Module, mode: str = "default", backend: str = "inductor", dynamic: bool | None = None
) -> None:
    """Compile ``module.net`` (or ``module`` itself for a plain ``LightningModule``) in place with ``torch.compile``.

    ``mode``: ``default``, ``reduce-overhead`` (CUDA graphs) or ``max-autotune``. ``backend``: torch's
    compiler backend (``inductor``; ``eager`` checks graph capture without generating code, e.g. where no
    C compiler is installed). For a plain ``LightningModule`` only calls through ``module(...)`` (its
    ``forward``) are compiled. State-dict keys do not change.
    """
    if mode not in MODES:
        raise ValueError(f"compile.mode: must be one of {', '.join(MODES)}, got {mode!r}")
    # torch.compile rejects a mode together with a non-inductor backend's options only when both are set:
    # pass the mode to inductor, leave it out for other backends (which have no modes).
    options: dict[str, Any] = {"mode": mode} if backend == "inductor" else {}
    target = compile_target(module)
    target.compile(backend=backend, dynamic=dynamic, **options)
    # Compilation happens in the first steps (and again for new input shapes): say so, or they look hung.
    print(
        f"dlrun: note: {type(target).__name__} compiled with torch.compile (mode {mode}, backend {backend}); "
        "the first steps compile it",
        file=sys.stderr,
        flush=True,
    )


def is_compiled(module: nn.Module) -> bool:
    """True when ``compile_network`` compiled this module's network."""
    return torch_is_compiled_in_place(compile_target(module))


def strip_compile_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with every ``_orig_mod.`` (from ``torch.compile(net)`` wrappers) taken out of its keys.

    Not needed for networks compiled by ``compile_network``; for checkpoints of modules that wrapped
    their own layers with ``torch.compile``.
    """
    return {key.replace(PREFIX, ""): value for key, value in state_dict.items()}


def uncompiled(module: nn.Module) -> nn.Module:
    """``module`` itself, or the network inside a ``torch.compile`` wrapper (``OptimizedModule._orig_mod``)."""
    original = torch_compiled_original(module)
    return original if isinstance(original, nn.Module) else module
