"""Look inside a network with forward hooks: layer shapes, intermediate outputs, weights by name.

``dlrun.inspect.activations(module, batch, layers=["net.layers.1"])`` returns what those layers produced;
``dlrun.inspect.weights(module)`` maps parameter names to tensors; ``trace`` records every layer's input
and output shapes and, when a layer fails, names it and the shapes involved (``ShapeError``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dlrun._upstream import torch_conv_and_norm_bases
from dlrun.errors import UserError


class ShapeError(UserError):
    """A layer got an input it cannot take; the message names the layer and both shapes."""

    exit_code = 2


@dataclass
class LayerRecord:
    """One submodule seen during a forward pass (shapes of its first call)."""

    name: str
    type: str
    params: int
    trainable: int
    input_shape: str = "-"
    output_shape: str = "-"
    calls: int = 0
    depth: int = field(default=0)


def describe_shape(value: Any) -> str:
    """``[128, 1, 28, 28]`` for a tensor; nested for tuples/lists/dicts; the type name for anything else."""
    if isinstance(value, torch.Tensor):
        return str(list(value.shape))
    if isinstance(value, nn.utils.rnn.PackedSequence):
        return f"packed{list(value.data.shape)}"
    if isinstance(value, (tuple, list)):
        parts = [describe_shape(v) for v in value if v is not None]
        return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {describe_shape(v)}" for k, v in value.items()) + "}"
    return type(value).__name__


def expected_input(module: nn.Module) -> str | None:
    """What a standard layer accepts, written like a shape (None when not known)."""
    if isinstance(module, nn.Linear):
        return f"[*, {module.in_features}]"
    conv, batch_norm = torch_conv_and_norm_bases()
    if isinstance(module, conv):
        dims = ", ".join("*" for _ in module.kernel_size)
        return f"[batch, {module.in_channels}, {dims}]"
    if isinstance(module, batch_norm):
        return f"[batch, {module.num_features}, ...]"
    if isinstance(module, nn.LayerNorm):
        return f"[*, {', '.join(map(str, module.normalized_shape))}]"
    if isinstance(module, nn.RNNBase):
        return f"[batch, seq, {module.input_size}]" if module.batch_first else f"[seq, batch, {module.input_size}]"
    if isinstance(module, nn.Embedding):
        return f"integer ids in [0, {module.num_embeddings})"
    return None


def _inputs(module: nn.Module, batch: Any) -> tuple[Any, ...]:
    """Forward arguments: a tensor is the one argument, a tuple (an objective's ``example_input``) the list of them."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


@contextmanager
def _hooks(module: nn.Module, pre: Any, post: Any, names: Iterable[str] | None = None) -> Iterator[None]:
    """Register forward pre/post hooks on the named submodules (all but the root when ``names`` is None)."""
    wanted = set(names) if names is not None else None
    handles = []
    try:
        for name, sub in module.named_modules():
            if (wanted is None and name) or (wanted is not None and name in wanted):
                if pre is not None:
                    handles.append(sub.register_forward_pre_hook(_bind(pre, name), with_kwargs=True))
                if post is not None:
                    handles.append(sub.register_forward_hook(_bind(post, name), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for a look inside (no batch-norm statistics updated), each submodule's mode restored after."""
    modes = {sub: sub.training for sub in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes.items():
            sub.training = training


def _bind(hook: Any, name: str) -> Any:
    return lambda mod, *rest: hook(name, mod, *rest)


def _count(module: nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def layers(module: nn.Module) -> list[LayerRecord]:
    """Every submodule that holds parameters, with its counts, without running the network (shapes unknown)."""
    records = []
    for name, sub in module.named_modules():
        total, trainable = _count(sub)
        if name and total:
            records.append(LayerRecord(name, type(sub).__name__, total, trainable, depth=name.count(".")))
    return records


def trace(module: nn.Module, batch: Any) -> list[LayerRecord]:
    """Push one batch through ``module`` (no grad) and record each submodule's shapes and parameter counts.

    Raises ShapeError naming the innermost layer that failed, its expected and actual input.
    """
    records: dict[str, LayerRecord] = {}
    for name, sub in module.named_modules():
        if name:
            total, trainable = _count(sub)
            records[name] = LayerRecord(name, type(sub).__name__, total, trainable, depth=name.count("."))
    running: list[tuple[str, nn.Module, str]] = []

    def pre(name: str, mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        shape = describe_shape(args if args else tuple(kwargs.values()))
        running.append((name, mod, shape))
        record = records[name]
        if record.calls == 0:
            record.input_shape = shape

    def post(name: str, mod: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        running.pop()
        record = records[name]
        if record.calls == 0:
            record.output_shape = describe_shape(output)
        record.calls += 1

    with _hooks(module, pre, post), _eval_mode(module), torch.no_grad():
        try:
            module(*_inputs(module, batch))
        except UserError:
            raise
        except Exception as err:
            if not running:
                raise
            raise shape_error(*running[-1], err) from err
    return [r for r in records.values() if r.calls or r.params]


def shape_error(name: str, module: nn.Module, got: str, err: BaseException) -> ShapeError:
    """One line naming the failing layer, what it expects and what it got."""
    expected = expected_input(module)
    label = f"{name} ({type(module).__name__})"
    if expected is not None:
        return ShapeError(f"layer {label}: expects input {expected}, got {got}")
    reason = " ".join(str(err).split())
    return ShapeError(f"layer {label}: failed on input {got}: {reason}")


def activations(module: nn.Module, batch: Any, layers: Sequence[str] | None = None) -> dict[str, Any]:
    """Outputs of the named layers (all leaf layers when None) for one batch, detached, by layer name.

    ``batch`` is a forward input tensor or a batch from the data module. A layer called several times in
    one pass (a decoder step) maps to the list of its outputs, in call order.
    """
    names = dict(module.named_modules())
    if layers is None:
        layers = [n for n, m in names.items() if n and not list(m.children())]
    for layer in layers:
        if layer not in names:
            close = difflib.get_close_matches(layer, [n for n in names if n], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"layers: no layer named {layer!r} in {type(module).__name__}{hint}")
    seen: dict[str, list[Any]] = {layer: [] for layer in layers}

    def post(name: str, mod: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        seen[name].append(_detach(output))

    with _hooks(module, None, post, names=layers), torch.no_grad():
        module(*_inputs(module, batch))
    return {name: outs[0] if len(outs) == 1 else outs for name, outs in seen.items()}


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter by its dotted name (``net.layers.1.weight``), detached (shares memory with the module)."""
    return {name: param.detach() for name, param in module.named_parameters()}


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return (
            type(value)(_detach(v) for v in value)
            if not hasattr(value, "_fields")
            else type(value)(*map(_detach, value))
        )
    return value
