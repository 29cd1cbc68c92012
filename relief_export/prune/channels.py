"""Channel provenance: for every value in the traced graph, which layer units feed each channel.

A unit is a (layer name, output index) pair. Linear and Conv2d outputs start new units; per
channel operations (BatchNorm, activations, pooling, dropout) keep them; an add takes the
union per channel; cat / slicing / channel padding / flatten move them; a multiplication by a
per-channel constant drops the channels it zeroes. Anything else is treated conservatively:
every channel of its output may depend on every unit of its inputs, which all count as read.

A unit is *read* when a layer reads, with some nonzero weight, a channel that carries it, when
it reaches the model output, or when an operation we do not model consumes it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..fx_attrs import attribute_value
from ..fx_ops import (
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    ELEMENTWISE_MODULES,
    IDENTITY_FUNCTIONS,
    IDENTITY_MODULES,
    PAD_FUNCTIONS,
)
from .structure import (
    BATCHNORM_TYPES,
    LAYER_TYPES,
    Layer,
    is_add,
    is_mul,
    out_units,
)

Unit = tuple[str, int]
Channels = list[frozenset[Unit]]
EMPTY: frozenset[Unit] = frozenset()

_KEEP_MODULES = (*BATCHNORM_TYPES, *ELEMENTWISE_MODULES, *IDENTITY_MODULES, nn.MaxPool2d,
                 nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_KEEP_FUNCTIONS = {*ELEMENTWISE_FUNCTIONS, *IDENTITY_FUNCTIONS, F.max_pool2d, F.avg_pool2d,
                   F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.max_pool2d}
_KEEP_METHODS = {*ELEMENTWISE_METHODS, "contiguous", "clone", "detach", "float", "to"}
_RESHAPES_FUNCTIONS = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"view", "reshape", "flatten"}


class ChannelFlow:
    """Runs the provenance over a traced graph whose nodes carry ``tensor_meta`` shapes."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        self.graph_module = graph_module
        self.modules = dict(graph_module.named_modules())
        self.values: dict[fx.Node, Any] = {}
        self.read: set[Unit] = set()

    def run(self) -> set[Unit]:
        """All units that something reads."""
        for node in self.graph_module.graph.nodes:
            self.values[node] = self._visit(node)
        return self.read

    # -- dispatch ---------------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self._fresh(node, ("<input>", -1))
        if node.op == "get_attr":
            return None
        if node.op == "output":
            self._read_all(node.args)
            return None
        if node.op == "call_module":
            return self._module(node, self.modules[str(node.target)])
        handler = self._handler(node)
        return handler(node) if handler is not None else self._opaque(node)

    def _handler(self, node: fx.Node) -> Callable[[fx.Node], Any] | None:
        target = node.target
        if is_add(node):
            return self._add
        if is_mul(node):
            return self._mul
        if node.op == "call_function":
            if target in _KEEP_FUNCTIONS:
                return self._keep
            if target in _RESHAPES_FUNCTIONS:
                return self._reshape
            if target is torch.cat:
                return self._cat
            if target in PAD_FUNCTIONS:
                return self._pad
            if target is operator.getitem:
                return self._getitem
        if node.op == "call_method":
            if target in _KEEP_METHODS:
                return self._keep
            if target in _RESHAPE_METHODS:
                return self._reshape
            if target == "size" or target == "dim":
                return lambda _node: None
        return None

    # -- leaves -----------------------------------------------------------------------------
    def _fresh(self, node: fx.Node, unit: Unit) -> Channels:
        return [frozenset({(unit[0], c)}) for c in range(_channels(node))]

    def _module(self, node: fx.Node, module: nn.Module) -> Any:
        if isinstance(module, LAYER_TYPES):
            self._read_by_layer(node, module)
            return [frozenset({(str(node.target), j)}) for j in range(out_units(module))]
        if isinstance(module, _KEEP_MODULES):
            return self._keep(node)
        if isinstance(module, nn.Flatten):
            return self._reshape(node)
        return self._opaque(node)

    def _value(self, argument: Any) -> Any:
        """The provenance of a node argument (None for constants and non-tensors)."""
        return self.values.get(argument) if isinstance(argument, fx.Node) else None

    def _read_by_layer(self, node: fx.Node, layer: Layer) -> None:
        channels = self._value(node.args[0])
        if not isinstance(channels, list):
            self._read_all(node.args)
            return
        used = read_input_channels(layer)
        if len(used) != len(channels):
            self._read_all(node.args)
            return
        for index in torch.nonzero(used).flatten().tolist():
            self.read |= channels[index]

    # -- per-channel operations -------------------------------------------------------------
    def _keep(self, node: fx.Node) -> Any:
        value = self._value(node.args[0]) if node.args else None
        if isinstance(value, list) and len(value) == _channels(node):
            return value
        return self._opaque(node)

    def _add(self, node: fx.Node) -> Any:
        parts = [p for p in map(self._value, node.args[:2]) if isinstance(p, list)]
        width = _channels(node)
        if not parts or any(len(p) not in (1, width) for p in parts):
            return self._opaque(node)
        return [frozenset().union(*(p[c if len(p) > 1 else 0] for p in parts))
                for c in range(width)]

    def _mul(self, node: fx.Node) -> Any:
        tensors = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        constants = [self._constant(a) for a in tensors]
        data = [a for a, c in zip(tensors, constants, strict=True) if c is None]
        if len(data) != 1:
            return self._opaque(node) if len(data) > 1 else None
        value = self._value(data[0])
        if not isinstance(value, list):
            return self._opaque(node)
        scale = next((c for c in constants if c is not None), None)
        if scale is None:
            return value
        per_channel = scale.detach().flatten()
        if per_channel.numel() == 1:
            return value if per_channel.item() != 0 else [EMPTY] * len(value)
        if per_channel.numel() != len(value):
            return self._opaque(node)
        return [units if per_channel[c] != 0 else EMPTY for c, units in enumerate(value)]

    def _constant(self, node: fx.Node) -> torch.Tensor | None:
        """The value of a parameter / buffer reached through view-like methods, else None."""
        return attribute_value(self.graph_module, node)

    # -- moving channels ----------------------------------------------------------------------
    def _reshape(self, node: fx.Node) -> Any:
        source = node.args[0]
        value = self._value(source)
        in_shape, out_shape = _shape(source), _shape(node)
        if not isinstance(value, list) or in_shape is None or out_shape is None:
            return self._opaque(node)
        if len(in_shape) >= 2 and len(out_shape) == 2 and out_shape[0] == in_shape[0]:
            per_channel = out_shape[1] // max(1, len(value))
            if per_channel * len(value) == out_shape[1]:
                return [units for units in value for _ in range(per_channel)]
        if out_shape[:2] == in_shape[:2]:
            return value
        return self._opaque(node)

    def _cat(self, node: fx.Node) -> Any:
        tensors = node.args[0]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        parts = [self._value(t) for t in tensors] if isinstance(tensors, list | tuple) else []
        if not parts or not all(isinstance(p, list) for p in parts):
            return self._opaque(node)
        if dim == 1 or (isinstance(dim, int) and dim == 1 - len(_shape(node) or ())):
            return [units for part in parts for units in part]
        if len({len(p) for p in parts}) == 1:
            return [frozenset().union(*column) for column in zip(*parts, strict=True)]
        return self._opaque(node)

    def _pad(self, node: fx.Node) -> Any:
        value = self._value(node.args[0])
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        shape = _shape(node.args[0])
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        if not isinstance(value, list) or shape is None or not isinstance(pad, list | tuple):
            return self._opaque(node)
        dims_padded = len(pad) // 2
        if dims_padded < len(shape) - 1:
            return value
        if mode != "constant":
            return self._opaque(node)
        offset = 2 * (len(shape) - 2)
        before, after = int(pad[offset]), int(pad[offset + 1])
        return [EMPTY] * before + value + [EMPTY] * after

    def _getitem(self, node: fx.Node) -> Any:
        value = self._value(node.args[0])
        index = node.args[1]
        if isinstance(value, tuple) and isinstance(index, int):
            return value[index]
        if not isinstance(value, list):
            return self._opaque(node)
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) < 2 or index[0] != slice(None):
            return value if index[0] == slice(None) and len(index) == 1 else self._opaque(node)
        if isinstance(index[1], slice):
            return value[index[1]]
        return self._opaque(node)

    # -- fallbacks --------------------------------------------------------------------------
    def _opaque(self, node: fx.Node) -> Any:
        """Unknown operation: its inputs are read; its output may carry all of their units."""
        units = self._read_all((node.args, node.kwargs))
        width = _channels(node)
        return [units] * width if width else None

    def _read_all(self, arguments: Any) -> frozenset[Unit]:
        units = self._units_in(arguments)
        self.read |= units
        return frozenset(units)

    def _units_in(self, argument: Any) -> set[Unit]:
        if isinstance(argument, fx.Node):
            value = self.values.get(argument)
            if isinstance(value, list):
                return set().union(*value) if value else set()
            if isinstance(value, tuple):
                return set().union(*(set().union(*v) for v in value if v))
            return set()
        if isinstance(argument, (list, tuple)):
            return set().union(*(self._units_in(a) for a in argument)) if argument else set()
        if isinstance(argument, dict):
            return set().union(*(self._units_in(a) for a in argument.values())) \
                if argument else set()
        return set()


def read_input_channels(layer: Layer) -> torch.Tensor:
    """Bool [in]: input features / channels that some nonzero weight reads."""
    weight = layer.weight.detach()
    if isinstance(layer, nn.Linear):
        return weight.ne(0).any(0)
    assert isinstance(layer, nn.Conv2d)
    out, per_in = weight.shape[:2]
    groups = layer.groups
    used = weight.ne(0).any(3).any(2)  # [out, in/g]
    return used.view(groups, out // groups, per_in).any(1).flatten()


def _shape(node: fx.Node | Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _channels(node: fx.Node) -> int:
    shape = _shape(node)
    return int(shape[1]) if shape is not None and len(shape) >= 2 else 0


def read_units(graph_module: fx.GraphModule) -> set[Unit]:
    """Units read by something, under the graph module's current weights and gates."""
    return ChannelFlow(graph_module).run()
