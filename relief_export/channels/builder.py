"""The channel interpreter's builder: one pass over a shape-propagated graph; each node goes
to its rule in the channel table (``table.py``, rules in ``ops/``).

Every channel (feature) of every tensor value is a *slot*; each value records which axis holds
its channels (1 for convolutions, the last for Linear on [batch, tokens, features]), and
transposes, permutes, views and indexing move it. Operations that keep channels apart
(BatchNorm, activations, pooling, dropout, per-channel gates, flatten blocks, cat, channel
slices) pass slot ids through; an add unites the slots it sums; channel padding makes new zero
slots. A *group* (a union-find root) is kept or removed as a whole.

Two abstract values run over the same table, per channel:
- for compaction, the slot id and the state below;
- for pruning, the *units* (layer name, output index) whose signal the channel carries: layers
  start new units, an add or a product takes the union, moves carry them. A unit is *read*
  when a layer reads a channel carrying it with a nonzero weight, when it reaches the output,
  or when something the table keeps whole (an unknown operation, a LayerNorm over channels)
  consumes it; channels that are constant zero carry nothing.

States, per value and channel: live, or constant with a known value (0 = zero). A Linear / Conv
unit is constant when no nonzero weight reads a live channel (for padded convs, also no
nonzero constant channel, whose border contribution is not uniform); its value is
b_j + sum_i W_ji v_i (taps summed for convs).

A group is kept when a slot in it is pinned (model input or output, an operation we do not
model, a grouped convolution) or when a kept unit reads, with a nonzero weight, a slot that is
live, or constant but not foldable (read by a padded conv). Kept units are those whose output
group is kept; the decision repeats until nothing changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from ..graph import ops
from ..graph.attrs import attribute_value
from . import layer_call as lc
from . import table
from .layer_call import shape_of
from .ops import layers as layer_rule
from .ops.two_value import PARTIAL_ADD_COST
from .structures import NO_UNITS, LeftWhole, SlotGraph, Slots, Unit, flatten


def build(graph_module: fx.GraphModule, partial_add_cost: float = PARTIAL_ADD_COST
          ) -> SlotGraph:
    """Slots for every value of a shape-propagated graph."""
    slots = SlotGraph(graph_module)
    modules = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    builder = Builder(slots, modules, calls, partial_add_cost)
    for node in graph_module.graph.nodes:
        result = builder.dispatch(node)
        if result is not None:
            slots.values[node] = result
    return slots


def read_units(graph_module: fx.GraphModule) -> set[Unit]:
    """Units something reads, under the graph module's current weights and gates (the graph
    must carry ``tensor_meta`` shapes)."""
    return build(graph_module).read


class Builder:
    """What the rules see: the slot graph being built and helpers to read it."""

    def __init__(self, slots: SlotGraph, modules: dict[str, nn.Module], calls: dict[str, int],
                 partial_add_cost: float):
        self.s = slots
        self.modules = modules
        self.calls = calls
        self.partial_add_cost = partial_add_cost

    # -- helpers ------------------------------------------------------------------------------
    def fresh(self, width: int, live: bool = True, axis: int = 1,
              units: list[frozenset[Unit]] | None = None) -> Slots:
        return Slots(self.s.union.new(width), torch.full((width,), live),
                     torch.zeros(width, dtype=torch.float64), units or [NO_UNITS] * width, axis)

    def of(self, argument: Any) -> Slots | None:
        return self.s.values.get(argument) if isinstance(argument, fx.Node) else None

    def on_axis(self, argument: Any, axis: int) -> Slots | None:
        """The slots of ``argument`` with its channels on ``axis``. A value that is kept whole
        anyway (every slot pinned: inputs, outputs of unsupported operations) can be seen along
        any axis, as new pinned slots."""
        value, shape = self.of(argument), shape_of(argument)
        if value is None or shape is None or not shape:
            return None
        axis %= len(shape)
        if value.axis == axis:
            return value
        if not all(slot in self.s.pins for slot in value.ids):
            return None
        self.s.keep_whole(value, "read along another axis")
        seen = self.fresh(shape[axis], axis=axis)
        self.s.pin(seen.ids, self.s.pins[value.ids[0]] if value.ids else "network input")
        self.s.values[argument] = seen
        return seen

    def constant(self, argument: Any) -> torch.Tensor | None:
        """A get_attr tensor (through view-like methods) or a Python number, else None."""
        if isinstance(argument, (int, float)) and not isinstance(argument, bool):
            return torch.tensor(float(argument), dtype=torch.float64)
        value = attribute_value(self.s.graph_module, argument)
        return None if value is None else value.detach().double()

    def shared(self, node: fx.Node) -> bool:
        """A module with state called more than once cannot be sliced for one call alone."""
        if node.op != "call_module" or self.calls.get(str(node.target), 0) < 2:
            return False
        module = self.modules[str(node.target)]
        return any(True for _ in module.parameters()) or any(True for _ in module.buffers())

    # -- dispatch ------------------------------------------------------------------------------
    def dispatch(self, node: fx.Node) -> Slots | None:
        """The slots of ``node``'s value: inputs pinned, layers and table rules applied, anything
        else (or a rule that returns None) kept whole."""
        if node.op == "placeholder":
            shape = shape_of(node)
            if shape is None or len(shape) < 2:
                return None
            value = self.fresh(shape[1])
            self.s.pin(value.ids, "network input")
            return value
        if node.op == "get_attr":
            return None
        if node.op == "output":
            for argument in fx.node.map_aggregate(node.args, lambda a: a) or ():
                self.keep_all_whole(argument, "model output")
            return None
        if node.target in ops.SHAPE_QUERIES or (node.target is getattr and len(node.args) > 1
                                                 and node.args[1] in ops.TENSOR_PROPERTIES):
            return None
        if self.shared(node):
            return self.unknown(node, "a module with weights called more than once")
        layer = lc.layer_call(node, self.s.graph_module, self.modules)
        if layer is not None:
            return layer_rule.layer(self, layer) or self.unknown(
                node, "its input's features are not on the axis the layer reads")
        op_rule = table.lookup(node, self.modules)
        if op_rule is None:
            return self.unknown(node, "operation not in the channel table")
        if not op_rule.heads and any(
                isinstance(a, fx.Node) and a in self.s.values and
                self.s.values[a].inner_axis is not None for a in flatten(list(node.args))):
            return self.unknown(node, "its input's channels are split into attention heads")
        result = op_rule.apply(self, node)
        if result is not None or node in self.s.parts:
            return result
        return self.unknown(node, f"arguments the {op_rule.name} rule does not cover")

    # -- fallback ------------------------------------------------------------------------------
    def unknown(self, node: fx.Node, why: str) -> Slots | None:
        """Keep the neighbourhood of an operation we do not model whole, saying why."""
        described = f"{node.op} {getattr(node.target, '__name__', node.target)} ({node.name})"
        arguments = fx.node.map_aggregate((node.args, node.kwargs), lambda a: a)
        if node.users and any(isinstance(a, fx.Node) and a in self.s.values
                              for a in flatten(arguments)):
            op = f"{node.op} {getattr(node.target, '__name__', node.target)}"
            self.s.unsupported.append(LeftWhole(node.name, op, why))
        self.keep_all_whole(arguments, f"left uncompacted around unsupported {described}")
        width = _width(node)
        if not width:
            return None
        value = self.fresh(width)
        self.s.pin(value.ids, f"output of unsupported {described}")
        return value

    def keep_all_whole(self, argument: Any, reason: str) -> None:
        for item in flatten(argument):
            slots = self.of(item)
            if slots is not None:
                self.s.keep_whole(slots, reason)
        for item in flatten(argument):  # split parts read as a whole
            for part in self.s.parts.get(item, []) if isinstance(item, fx.Node) else []:
                self.s.keep_whole(part, reason)



def _width(node: fx.Node) -> int:
    shape = shape_of(node)
    return int(shape[1]) if shape is not None and len(shape) >= 2 else 0
